/*
[dependencies]
vigia-arroyo-udfs = { path = "/opt/vigia/udfs" }
*/
//! Arroyo UDF `intent_mask(text) -> BIGINT`: the buying signals of one customer message as a bit
//! set (price, quote, buy, availability, financing, visit, discount = bits 0..6), by the
//! processors' own classifier; `BIT_OR` it over a lead's messages for `hot_lead_score`. Register
//! this file as is. Documentation: udfs/src/lib.rs.

use arroyo_udf_plugin::udf;

#[udf]
fn intent_mask(text: Option<&str>) -> i64 {
    vigia_arroyo_udfs::intent_mask(text)
}
