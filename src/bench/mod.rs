//! `funnel bench …`: each figure is a ratio against a baseline measured in the same run on
//! the same data, so machine speed cancels out.

pub mod bronze;
pub mod c360;
pub mod campaigns;
pub mod cdc_snapshot;
pub mod relay;
pub mod scale_out;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

pub struct Measurement {
    pub name: String,
    pub records: u64,
    pub seconds: f64,
}

impl Measurement {
    pub fn per_second(&self) -> f64 {
        self.records as f64 / self.seconds.max(1e-9)
    }
}

/// Print the candidate against its baseline, with the ratio.
pub fn report(title: &str, baseline: &Measurement, candidate: &Measurement) {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header(vec!["run", "records", "seconds", "records/s"]);
    for m in [baseline, candidate] {
        t.add_row(vec![m.name.clone(), m.records.to_string(), format!("{:.2}", m.seconds), format!("{:.0}", m.per_second())]);
    }
    println!("{title}\n{t}");
    println!("ratio {} ÷ {} = {:.3}", candidate.name, baseline.name, candidate.per_second() / baseline.per_second());
}
