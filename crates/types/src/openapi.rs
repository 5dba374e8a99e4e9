//! OpenAPI schemas (feature `openapi`) for the types whose serde form is hand-written: sizes,
//! CPU counts, ids, timestamps, limits, network policies, stats. Each mirrors its `Deserialize`
//! and `Serialize` impls; the task types in `task.rs` derive theirs.

use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat,
    Type,
};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::{
    Bytes, Cpus, ExecutionStats, NetworkPolicy, OutputStream, ResourceLimits, Rlimit,
    RlimitResource, TaskId, Timestamp,
};

fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
}

fn integer(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(0))
        .description(Some(description))
}

fn closed(object: ObjectBuilder) -> ObjectBuilder {
    object
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
}

/// `timeout`: a human duration or a number of seconds.
pub fn duration_schema() -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(string("a duration such as 30s, 5m, 1h 30m"))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .exclusive_minimum(Some(0.0))
                .maximum(Some(604_800.0))
                .description(Some("seconds, more than zero and at most 7 days")),
        )
        .description(Some("A limit for the whole task"))
        .into()
}

impl PartialSchema for Bytes {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(integer("bytes"))
            .item(string(
                "a size such as 512m, 2g, 1.5GiB (powers of 1024); negative sizes are refused",
            ))
            .description(Some("A number of bytes, or a size with a unit"))
            .into()
    }
}
impl ToSchema for Bytes {}

/// A size the server accepts only between `min` and `max` bytes (as text, the same range).
fn bounded_bytes(min: u64, max: u64) -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(integer("bytes").minimum(Some(min)).maximum(Some(max)))
        .item(string(&format!(
            "a size such as 512m or 2g (powers of 1024), from {} to {}",
            Bytes(min),
            Bytes(max)
        )))
        .description(Some("A number of bytes, or a size with a unit"))
        .into()
}

impl PartialSchema for Cpus {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .minimum(Some(0.01))
                    .maximum(Some(1024.0)),
            )
            .item(string("a number of cores as text, such as \"0.5\""))
            .description(Some("CPU cores, between 0.01 and 1024"))
            .into()
    }
}
impl ToSchema for Cpus {}

impl PartialSchema for TaskId {
    fn schema() -> RefOr<Schema> {
        string("task id")
            .format(Some(SchemaFormat::Custom("uuid".to_owned())))
            .into()
    }
}
impl ToSchema for TaskId {}

impl PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        string("RFC 3339 time with milliseconds, UTC")
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .into()
    }
}
impl ToSchema for Timestamp {}

impl PartialSchema for OutputStream {
    fn schema() -> RefOr<Schema> {
        string("output stream")
            .enum_values(Some(["stdout", "stderr"]))
            .into()
    }
}
impl ToSchema for OutputStream {}

impl PartialSchema for RlimitResource {
    fn schema() -> RefOr<Schema> {
        string("rlimit")
            .enum_values(Some([
                "as", "core", "cpu", "data", "fsize", "memlock", "nofile", "nproc", "stack",
            ]))
            .into()
    }
}
impl ToSchema for RlimitResource {}

impl PartialSchema for Rlimit {
    fn schema() -> RefOr<Schema> {
        closed(ObjectBuilder::new())
            .property("resource", RlimitResource::schema())
            .property("soft", integer("soft limit"))
            .property("hard", integer("hard limit (at least soft)"))
            .required("resource")
            .required("soft")
            .required("hard")
            .into()
    }
}
impl ToSchema for Rlimit {}

impl PartialSchema for ResourceLimits {
    fn schema() -> RefOr<Schema> {
        closed(ObjectBuilder::new())
            .description(Some("Resource limits; absent means no limit of our own"))
            .property("cpus", Cpus::schema())
            .property(
                "memory",
                bounded_bytes(4 * Bytes::MIB, crate::MAX_MEMORY.get()),
            )
            .property(
                "pids",
                integer("most processes and threads alive at once")
                    .minimum(Some(1))
                    .maximum(Some(crate::MAX_PIDS)),
            )
            .property("disk", bounded_bytes(Bytes::MIB, crate::MAX_DISK.get()))
            .property("rlimits", ArrayBuilder::new().items(Rlimit::schema()))
            .into()
    }
}
impl ToSchema for ResourceLimits {}

impl PartialSchema for NetworkPolicy {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(string("policy").enum_values(Some(["none", "localhost", "full", "host"])))
            .item(
                closed(ObjectBuilder::new())
                    .property(
                        "allowlist",
                        ArrayBuilder::new().items(string("host name or address")),
                    )
                    .required("allowlist"),
            )
            .description(Some(
                "Network access: none, localhost, full (outbound through a namespace of its own), \
                 host (the host's own network, host executor only), or {\"allowlist\": [hosts]}",
            ))
            .into()
    }
}
impl ToSchema for NetworkPolicy {}

impl PartialSchema for ExecutionStats {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("duration_ms", integer("wall-clock milliseconds"))
            .property("cpu_time_us", integer("user + system CPU microseconds"))
            .property("peak_memory_bytes", integer("highest memory use"))
            .property("disk_read_bytes", integer("bytes read from block devices"))
            .property(
                "disk_write_bytes",
                integer("bytes written to block devices"),
            )
            .required("duration_ms")
            .into()
    }
}
impl ToSchema for ExecutionStats {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_refuse_unknown_fields_like_serde_does() {
        let json = serde_json::to_value(ResourceLimits::schema()).unwrap();
        assert_eq!(json["additionalProperties"], serde_json::json!(false));
        let mut properties: Vec<String> = json["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        properties.sort();
        assert_eq!(properties, ["cpus", "disk", "memory", "pids", "rlimits"]);
    }
}
