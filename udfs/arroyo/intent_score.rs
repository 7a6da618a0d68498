/*
[dependencies]
vigia-arroyo-udfs = { path = "/opt/vigia/udfs" }
*/
//! Arroyo UDF `intent_score(text) -> DOUBLE`: the intent component of the hot-lead score for one
//! customer message on its own (.10 per distinct buying signal, at most .25), by the processors'
//! own code. Register this file as is. Documentation: udfs/src/lib.rs.

use arroyo_udf_plugin::udf;

#[udf]
fn intent_score(text: Option<&str>) -> f64 {
    vigia_arroyo_udfs::intent_score(text)
}
