-- Dead letters are bounded (issue 13): a stage keeps only the first 64 KiB of a refused record,
-- with the whole record's length and SHA-1, so that a dead letter always fits a Kafka record
-- whatever the refused record held. These columns say why, how long the original was, and which
-- it was (`sha1sum` of the original record's value gives the same hex). Rows written before
-- this migration have `reason = ''`, `payload_bytes = 0`, `payload_sha1 = ''`.
--
-- Also from this version on, `id` of a refused *output* (a notification or fact Kafka would not
-- take, `origin_topic` = the topic it was going to) derives from its content, and `tenant_id` is
-- taken from the refused record's key when its payload (perhaps cut) no longer says it.
ALTER TABLE {db}.dead_letters ADD COLUMN IF NOT EXISTS reason String DEFAULT '' COMMENT 'Why, as a label: empty_record, not_utf8, invalid_event, invalid_record, unknown_topic, clock_skew, too_late (older than the allowed lateness: stored in events, applied to no rule), over_tenant_limit (would add an entity beyond the limits of its tenant: stored in events, applied to no rule), output_too_large, output_refused; empty before 0011';

ALTER TABLE {db}.dead_letters ADD COLUMN IF NOT EXISTS payload_bytes UInt64 DEFAULT 0 COMMENT 'Length in bytes of the whole refused record (payload holds its first 64 KiB at most); 0 before 0011';

ALTER TABLE {db}.dead_letters ADD COLUMN IF NOT EXISTS payload_sha1 String DEFAULT '' COMMENT 'SHA-1 (hex) of the whole refused record, which identifies the original of a cut payload; empty before 0011';

-- 18.16 ignores COMMENT in ADD COLUMN; COMMENT COLUMN sets it everywhere.
ALTER TABLE {db}.dead_letters COMMENT COLUMN reason 'Why, as a label: empty_record, not_utf8, invalid_event, invalid_record, unknown_topic, clock_skew, too_late (older than the allowed lateness: stored in events, applied to no rule), over_tenant_limit (would add an entity beyond the limits of its tenant: stored in events, applied to no rule), output_too_large, output_refused; empty before 0011';

ALTER TABLE {db}.dead_letters COMMENT COLUMN payload_bytes 'Length in bytes of the whole refused record (payload holds its first 64 KiB at most); 0 before 0011';

ALTER TABLE {db}.dead_letters COMMENT COLUMN payload_sha1 'SHA-1 (hex) of the whole refused record, which identifies the original of a cut payload; empty before 0011';

ALTER TABLE {db}.dead_letters COMMENT COLUMN payload 'The refused record as text (lossy if it was not UTF-8): its first 64 KiB only since 0011 (payload_bytes, payload_sha1 describe the whole)';
