/// What can go wrong in the sink. Each message says what to check.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("invalid sink configuration: {0}")]
    Config(String),

    #[error(
        "ClickHouse at {url} failed to {doing}: {source}; check that it is running and \
         reachable (VIGIA_CLICKHOUSE_URL), that user and password are right, and that \
         `vigia migrate` has created the database and tables"
    )]
    ClickHouse {
        url: String,
        doing: String,
        #[source]
        source: clickhouse::error::Error,
    },

    #[error(
        "ClickHouse at {url} did not answer within {seconds}s while trying to {doing}; \
         is it overloaded or unreachable?"
    )]
    ClickHouseTimeout {
        url: String,
        doing: String,
        seconds: u64,
    },

    #[error(
        "migration {version:04} ({name}) failed at statement {statement} of its file: {source}; \
         fix the statement or the server, then run `vigia migrate` again (statements already \
         applied are idempotent)"
    )]
    Migration {
        version: u32,
        name: String,
        statement: usize,
        #[source]
        source: Box<SinkError>,
    },

    #[error(
        "a previous INSERT into {table} (query id {query_id}) is still running in ClickHouse; \
         waiting for it to finish before checking which rows it wrote"
    )]
    InsertStillRunning { table: String, query_id: String },

    #[error(
        "Kafka: cannot {doing}: {source}; check VIGIA_KAFKA_BROKERS and that the broker is up"
    )]
    Kafka {
        doing: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
}

impl SinkError {
    pub(crate) fn clickhouse(
        url: &str,
        doing: impl Into<String>,
        source: clickhouse::error::Error,
    ) -> SinkError {
        SinkError::ClickHouse {
            url: url.to_string(),
            doing: doing.into(),
            source,
        }
    }

    pub(crate) fn kafka(doing: impl Into<String>, source: rdkafka::error::KafkaError) -> SinkError {
        SinkError::Kafka {
            doing: doing.into(),
            source,
        }
    }
}
