//! Confluent-framed Avro → Arrow, bronze's path: split the frame, decode the datum with a CDC
//! envelope schema (the frame's schema id picks one), put its row images into Arrow builders,
//! and write the decoded value again with funnel's encoder. Errors are fine, panics are not.
#![no_main]
use std::sync::LazyLock;

use apache_avro::types::Value;
use apache_avro::Schema;
use funnel::avro::Column;
use libfuzzer_sys::fuzz_target;

static SCHEMAS: LazyLock<Vec<(Schema, Vec<Column>)>> = LazyLock::new(|| {
    [
        include_str!("../../schemas/cdc/olist.ecommerce.order_payments-value.avsc"),
        include_str!("../../schemas/cdc/olist.ecommerce.orders-value.avsc"),
        include_str!("../../schemas/cdc/olist.marketing.closed_deals-value.avsc"),
        include_str!("../../schemas/cdc/olist.ecommerce.products-value.avsc"),
    ]
    .iter()
    .map(|text| {
        let schema = Schema::parse_str(text).expect("committed schema parses");
        let columns = funnel::bronze::table_writer::envelope_columns(&schema).expect("a CDC envelope");
        (schema, columns)
    })
    .collect()
});

fuzz_target!(|data: &[u8]| {
    let Ok((id, mut datum)) = funnel::avro::serialization::split(data) else { return };
    let (schema, columns) = &SCHEMAS[id as usize % SCHEMAS.len()];
    let Ok(value) = apache_avro::from_avro_datum(schema, &mut datum, None) else { return };
    if let Value::Record(envelope) = &value {
        for image in ["before", "after"] {
            if let Some(Value::Record(row)) = funnel::avro::value::field(envelope, image) {
                let _ = funnel::avro::arrow::batch_of_records(columns, [row.as_slice()]);
            }
        }
    }
    let _ = funnel::avro::serialization::encode(id, schema, value);
});
