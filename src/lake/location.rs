//! Where the lake lives: a local directory or a prefix of an object store
//! (`s3://bucket/prefix`, through the deltalake crate's S3 support). Every table is addressed
//! by URL below the root (`<root>/<layer>/<name>/`), so every writer, the SQL catalog and the
//! replays work the same on both.
//!
//! S3 settings come from the environment, as the AWS tools read them: `AWS_ENDPOINT_URL` (an
//! S3-compatible server), `AWS_REGION`, `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`,
//! `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint. Commits are safe against concurrent
//! writers through S3's conditional writes (delta-rs' default), with no locking table.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use url::Url;

/// The root of the lake: bronze/, silver/ and gold/ below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lake {
    /// Always ends with `/`.
    root: Url,
}

impl Lake {
    /// A directory (created when missing) or an `s3://bucket/prefix` URL.
    pub fn parse(spec: &str) -> Result<Lake> {
        let spec = spec.trim();
        if spec.is_empty() {
            bail!("the lake location is empty: give a directory or s3://bucket/prefix");
        }
        let root = if let Some((scheme, _)) = spec.split_once("://") {
            let mut url = Url::parse(spec).with_context(|| format!("the lake location {spec} is not a valid URL"))?;
            match scheme {
                "s3" | "s3a" => {
                    if url.host_str().unwrap_or("").is_empty() {
                        bail!("the lake location {spec} names no bucket: use s3://bucket/prefix");
                    }
                }
                "file" => {
                    let path = url.to_file_path().map_err(|_| anyhow::anyhow!("the lake location {spec} is not a local path"))?;
                    return Lake::parse(&path.to_string_lossy());
                }
                "memory" => {}
                other => bail!("the lake location {spec} has the unsupported scheme {other}:// (a directory or s3://bucket/prefix)"),
            }
            if !url.path().ends_with('/') {
                url.set_path(&format!("{}/", url.path()));
            }
            url
        } else {
            std::fs::create_dir_all(spec).with_context(|| format!("cannot create the lake directory {spec}"))?;
            let abs = std::fs::canonicalize(spec).with_context(|| format!("resolving the lake directory {spec}"))?;
            Url::from_directory_path(&abs).map_err(|_| anyhow::anyhow!("the lake directory {} is not absolute", abs.display()))?
        };
        Ok(Lake { root })
    }

    /// A local directory as a lake (tests, tools that already hold a path).
    pub fn local(dir: &std::path::Path) -> Result<Lake> {
        Lake::parse(&dir.to_string_lossy())
    }

    pub fn root(&self) -> &Url {
        &self.root
    }

    /// The directory of a local lake; None on an object store.
    pub fn local_dir(&self) -> Option<PathBuf> {
        (self.root.scheme() == "file").then(|| self.root.to_file_path().ok()).flatten()
    }

    /// `<root>/<layer>/`: where a layer's tables live.
    pub fn layer(&self, layer: &str) -> Result<Url> {
        self.root.join(&format!("{}/", encode(layer))).with_context(|| format!("layer {layer} below {}", self.root))
    }

    /// `<root>/<layer>/<name>/`: the table's URL.
    pub fn table(&self, layer: &str, name: &str) -> Url {
        // Layer and table names are funnel's own (topic names, dotted identifiers); anything
        // a URL would read as syntax is escaped, so a name never points elsewhere.
        self.root.join(&format!("{}/{}/", encode(layer), encode(name))).expect("a relative path of escaped segments joins onto a directory URL")
    }
}

impl fmt::Display for Lake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.local_dir() {
            Some(p) => write!(f, "{}", p.display()),
            None => write!(f, "{}", self.root),
        }
    }
}

fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect::<String>().replace('+', "%20")
}

/// The last path segment of a table URL (its name), decoded.
pub fn name_of(table: &Url) -> String {
    let seg = table.path_segments().and_then(|s| s.filter(|s| !s.is_empty()).next_back()).unwrap_or("");
    percent_decode(seg)
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// A sibling of the table: `<parent>/<name>/` (the tombstones beside a table).
pub fn sibling(table: &Url, name: &str) -> Url {
    table.join(&format!("../{}/", encode(name))).expect("a sibling of a directory URL")
}

/// The directory of a `file://` URL; None for an object store.
fn local_path(url: &Url) -> Result<Option<PathBuf>> {
    if url.scheme() != "file" {
        return Ok(None);
    }
    url.to_file_path().map(Some).map_err(|_| anyhow::anyhow!("{url} is not a local path"))
}

/// The object store rooted at `url` (what delta-rs would use for a table there).
fn store_at(url: &Url) -> Result<Arc<dyn deltalake::ObjectStore>> {
    Ok(deltalake::DeltaTableBuilder::from_url(url.clone())?.build_storage()?.object_store(None))
}

/// The table's storage, ready to be written: a local directory is created first (the local
/// object store is rooted at an existing directory).
pub fn prepare(table: &Url) -> Result<()> {
    if let Some(path) = local_path(table)? {
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    }
    Ok(())
}

/// Whether a Delta table (a `_delta_log`) is at `table`.
pub async fn exists(table: &Url) -> Result<bool> {
    if let Some(path) = local_path(table)? {
        return Ok(path.join("_delta_log").is_dir());
    }
    let store = deltalake::DeltaTableBuilder::from_url(table.clone())?.build_storage()?;
    Ok(store.is_delta_table_location().await?)
}

/// Remove the table at `table` and every file below it; false when there was nothing.
pub async fn remove(table: &Url) -> Result<bool> {
    if let Some(path) = local_path(table)? {
        if !path.exists() {
            return Ok(false);
        }
        std::fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
        return Ok(true);
    }
    let store = store_at(table)?;
    let objects: Vec<deltalake::ObjectMeta> = store.list(None).try_collect().await.with_context(|| format!("listing {table}"))?;
    for o in &objects {
        store.delete(&o.location).await.with_context(|| format!("removing {} below {table}", o.location))?;
    }
    Ok(!objects.is_empty())
}

/// Whether the lake can be written: a probe file is written and removed again.
pub async fn probe(lake: &Lake) -> Result<String> {
    const PROBE: &str = ".funnel-health-probe";
    if let Some(dir) = lake.local_dir() {
        std::fs::create_dir_all(&dir)?;
        let probe = dir.join(PROBE);
        std::fs::write(&probe, b"ok")?;
        std::fs::remove_file(&probe)?;
        return Ok(format!("{} writable", dir.display()));
    }
    let store = store_at(&lake.root)?;
    let path = deltalake::Path::from(PROBE);
    store.put(&path, bytes::Bytes::from_static(b"ok").into()).await.with_context(|| format!("writing a probe to {}", lake.root))?;
    store.delete(&path).await.with_context(|| format!("removing the probe from {}", lake.root))?;
    Ok(format!("{} writable", lake.root))
}

/// The tables directly below `layer` (a `_delta_log` inside), by name; names starting with
/// `.` are funnel's bookkeeping and left out.
pub async fn tables_in(lake: &Lake, layer: &str) -> Result<Vec<(String, Url)>> {
    let mut names = vec![];
    if let Some(path) = lake.local_dir() {
        let Ok(entries) = std::fs::read_dir(path.join(layer)) else { return Ok(vec![]) };
        for e in entries.flatten() {
            if e.path().join("_delta_log").is_dir() {
                names.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    } else {
        let dir = lake.layer(layer)?;
        let store = store_at(&dir)?;
        let listing = store.list_with_delimiter(None).await.with_context(|| format!("listing {dir}"))?;
        for prefix in listing.common_prefixes {
            let Some(name) = prefix.filename().map(percent_decode) else { continue };
            if exists(&lake.table(layer, &name)).await? {
                names.push(name);
            }
        }
    }
    names.retain(|n| !n.starts_with('.'));
    names.sort();
    Ok(names.into_iter().map(|n| (n.clone(), lake.table(layer, &n))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_urls_below_the_root_on_disk_and_on_s3() {
        let lake = Lake::parse("s3://bucket/some/prefix").unwrap();
        assert_eq!(lake.table("gold", "m_dim.lead").as_str(), "s3://bucket/some/prefix/gold/m_dim.lead/");
        assert_eq!(name_of(&lake.table("bronze", "ns.ecommerce.orders")), "ns.ecommerce.orders");
        assert_eq!(sibling(&lake.table("silver", "t"), ".t.tombstones").as_str(), "s3://bucket/some/prefix/silver/.t.tombstones/");
        let dir = tempfile::tempdir().unwrap();
        let local = Lake::local(dir.path()).unwrap();
        assert!(local.local_dir().is_some());
        let t = local.table("bronze", "x");
        assert_eq!(t.to_file_path().unwrap(), std::fs::canonicalize(dir.path()).unwrap().join("bronze/x"));
        assert_eq!(Lake::parse(&format!("file://{}", dir.path().display())).unwrap(), local);
    }

    #[test]
    fn a_name_cannot_escape_its_layer() {
        let lake = Lake::parse("s3://bucket/p").unwrap();
        assert_eq!(lake.table("gold", "../x").as_str(), "s3://bucket/p/gold/..%2Fx/");
        assert_eq!(name_of(&lake.table("gold", "a b/c")), "a b/c");
    }

    #[test]
    fn bad_locations_are_named() {
        for (spec, says) in [("", "empty"), ("s3:///p", "no bucket"), ("http://x/y", "unsupported scheme")] {
            let e = Lake::parse(spec).expect_err(spec);
            assert!(format!("{e:#}").contains(says), "{spec}: {e:#}");
        }
    }
}
