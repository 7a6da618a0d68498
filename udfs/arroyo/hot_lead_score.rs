/*
[dependencies]
vigia-arroyo-udfs = { path = "/opt/vigia/udfs" }
*/
//! Arroyo UDF `hot_lead_score(source, customer_messages, seconds_since_last_customer_message,
//! intent_mask, location, high_value_locations) -> DOUBLE`: Vigía's hot-lead score in [0, 1],
//! computed by the processors' own scoring code. Register this file as is (Arroyo's UDF editor or
//! `POST /api/v1/udfs`); the header's path is where docker/compose.yaml mounts the repository.
//! Documentation: udfs/src/lib.rs.

use arroyo_udf_plugin::udf;

#[udf]
fn hot_lead_score(
    source: Option<&str>,
    customer_messages: i64,
    seconds_since_last_customer_message: Option<i64>,
    intent_mask: i64,
    location: Option<&str>,
    high_value_locations: Option<&str>,
) -> f64 {
    vigia_arroyo_udfs::hot_lead_score(
        source,
        customer_messages,
        seconds_since_last_customer_message,
        intent_mask,
        location,
        high_value_locations,
    )
}
