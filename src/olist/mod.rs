//! The olist source database: its tables (as in the Olist CSV headers), loading the real
//! files, and a deterministic synthetic generator for what the files lack.

pub mod db;
pub mod seed;
pub mod synthetic;
pub mod tables;
