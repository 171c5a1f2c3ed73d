//! Propensity scoring: two models, each a question a marketing team asks.
//! - `leads`: will this marketing-qualified lead close a deal? (real Olist MQLs and deals)
//! - `customers`: will this customer order again within the horizon? (the marketing-engine
//!   seed's c360 propensity score; on generated olist orders it can only find what the
//!   generator put there)
//!
//! `train` computes features from the lake with the SQL of `sql/propensity/` as of a cutoff,
//! fits a logistic regression (smartcore) on the period before it and evaluates it against a
//! baseline on the period after; `artefact` keeps the versioned model under
//! `<models>/propensity/<model>/<version>/` (`--models-dir`, by default `<lake>/models`); `metrics_table` appends the held-out metrics
//! to gold Delta tables. `run` / `scorer`: `funnel run propensity` scores every changed customer
//! and lead with the current model into `dom.customer.propensity.v1` / `marketing.lead.score.v1`
//! and the gold tables `c360_propensity` / `m_dim.lead_score`.

pub mod artefact;
pub mod cli;
pub mod demo;
pub mod evaluate;
pub mod features;
pub mod metrics;
pub mod metrics_table;
pub mod run;
pub mod scorer;
pub mod train;
