/*
[dependencies]
vigia-arroyo-udfs = { path = "/opt/vigia/udfs" }
*/
//! Arroyo UDF `intent_signals(text) -> TEXT`: the buying signals of one customer message by name,
//! comma-separated (`price,availability`; empty when none), by the processors' own classifier.
//! Register this file as is. Documentation: udfs/src/lib.rs.

use arroyo_udf_plugin::udf;

#[udf]
fn intent_signals(text: Option<&str>) -> String {
    vigia_arroyo_udfs::intent_signals(text)
}
