//! A background task tied to the values that use it.

/// Aborts its task when dropped: a follower that feeds a shared view stops with the last
/// clone of that view (a restarted processor does not leave its old follower running).
pub struct AbortOnDrop(pub tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
