//! The trace export settings: OpenTelemetry's own `OTEL_*` variables, read with the
//! meaning the OpenTelemetry specification gives them, but checked as strictly as every
//! other setting (the SDK would silently fall back to a default on a typo).
//! Unset `OTEL_EXPORTER_OTLP_ENDPOINT` (and `…_TRACES_ENDPOINT`): no tracing at all.

use std::time::Duration;

use percent_encoding::percent_decode_str;

use super::env::{ConfigError, Env, parse_bool};

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

/// Which traces are recorded: OpenTelemetry's standard samplers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerChoice {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    /// Follows the caller's decision when a `traceparent` came in; the inner choice for
    /// traces that start here.
    ParentBased(RootSampler),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RootSampler {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// The URL spans are sent to. For `http/protobuf` from `OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// `/v1/traces` is appended, as the specification says; a signal-specific
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is taken as it is.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub sampler: SamplerChoice,
    /// `service.name` and the other resource attributes, in the order given.
    pub resource: Vec<(String, String)>,
    /// One export's bound (`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, `…_TIMEOUT`).
    pub export_timeout: Duration,
    /// Spans waiting for export at most (`OTEL_BSP_MAX_QUEUE_SIZE`); past it, they are
    /// dropped and counted.
    pub queue_size: usize,
    /// Spans per export at most (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    pub batch_size: usize,
    /// The longest a span waits for a batch to fill (`OTEL_BSP_SCHEDULE_DELAY`).
    pub schedule_delay: Duration,
    /// Whether a request's `traceparent` is continued (`OTEL_PROPAGATORS=tracecontext`,
    /// the default) or ignored (`none`: where clients are strangers, who could otherwise
    /// force sampling or graft spans onto another trace).
    pub continue_incoming: bool,
}

/// Spans waiting for export, and per export, at most: each span is about a kilobyte
/// (its path and `tracestate` are bounded), so the queue's memory stays in megabytes.
const MAX_QUEUE_SIZE: usize = 8192;
const MAX_BATCH_SIZE: usize = 2048;

const DEFAULT_SERVICE_NAME: &str = "farol";

impl TraceSettings {
    /// `None`: no endpoint, or `OTEL_SDK_DISABLED=true`, or the `none` exporter.
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let disabled = env.parse_or("OTEL_SDK_DISABLED", false, "true or false", parse_bool)?;
        let exporter = env.parse_or(
            "OTEL_TRACES_EXPORTER",
            true,
            "otlp or none (farol exports traces over OTLP only)",
            |s| match s {
                "otlp" => Some(true),
                "none" => Some(false),
                _ => None,
            },
        )?;
        // switched off: the rest is not read, whatever it says
        if disabled || !exporter {
            return Ok(None);
        }
        let protocol = protocol(env)?;
        let endpoint = match (
            env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            env.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(url), _) => endpoint_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)?.to_owned(),
            (None, Some(url)) => {
                let base = endpoint_url("OTEL_EXPORTER_OTLP_ENDPOINT", url)?;
                match protocol {
                    OtlpProtocol::Grpc => base.to_owned(),
                    OtlpProtocol::HttpProtobuf => {
                        format!("{}/v1/traces", base.trim_end_matches('/'))
                    }
                }
            }
            (None, None) => return Ok(None),
        };
        unsupported_exporter_settings(env)?;
        let millis = |name: &str, default| env.millis(name, default, 1, 600_000);
        let count = |name: &str, default, max| env.count(name, default, max);
        let export_timeout = match env.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") {
            Some(_) => millis("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", 10_000)?,
            None => millis("OTEL_EXPORTER_OTLP_TIMEOUT", 10_000)?,
        };
        let queue_size = count("OTEL_BSP_MAX_QUEUE_SIZE", 2048, MAX_QUEUE_SIZE)?;
        let batch_size = count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, MAX_BATCH_SIZE)?;
        if batch_size > queue_size {
            return Err(ConfigError::new(
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                "must not exceed OTEL_BSP_MAX_QUEUE_SIZE",
            ));
        }
        Ok(Some(Self {
            endpoint,
            protocol,
            sampler: sampler(env)?,
            resource: resource(env)?,
            export_timeout,
            queue_size,
            batch_size,
            schedule_delay: millis("OTEL_BSP_SCHEDULE_DELAY", 5000)?,
            continue_incoming: env.parse_or(
                "OTEL_PROPAGATORS",
                true,
                "tracecontext or none (farol reads W3C trace context only)",
                |s| match s {
                    "tracecontext" => Some(true),
                    "none" => Some(false),
                    _ => None,
                },
            )?,
        }))
    }

    pub fn service_name(&self) -> &str {
        self.resource
            .iter()
            .find(|(key, _)| key == "service.name")
            .map_or(DEFAULT_SERVICE_NAME, |(_, value)| value)
    }
}

/// What the OTLP exporter would read by itself, and farol cannot honour: refused rather
/// than ignored. Headers are left to the exporter (they may hold a token, which must not
/// reach an error message), but their shape is checked here, since the exporter drops a
/// malformed pair without a word.
fn unsupported_exporter_settings(env: &Env) -> Result<(), ConfigError> {
    for name in [
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    ] {
        env.parse_or(name, (), "none (farol sends spans uncompressed)", |s| {
            (s == "none").then_some(())
        })?;
    }
    for name in [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    ] {
        let well_formed = env.get(name).is_none_or(|headers| {
            headers.split(',').all(|pair| {
                pair.split_once('=')
                    .is_some_and(|(key, _)| !key.trim().is_empty())
            })
        });
        if !well_formed {
            return Err(ConfigError::new(
                name,
                "key=value pairs separated by commas, values percent-encoded",
            ));
        }
    }
    Ok(())
}

fn protocol(env: &Env) -> Result<OtlpProtocol, ConfigError> {
    let name = if env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").is_some() {
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
    } else {
        "OTEL_EXPORTER_OTLP_PROTOCOL"
    };
    // The specification's default is http/protobuf.
    env.parse_or(
        name,
        OtlpProtocol::HttpProtobuf,
        "grpc or http/protobuf",
        |s| match s {
            "grpc" => Some(OtlpProtocol::Grpc),
            "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
            _ => None,
        },
    )
}

/// Plain `http://` only: TLS to the collector is the job of the node's or the mesh's
/// agent, which farol reaches on a private address.
fn endpoint_url<'a>(name: &str, url: &'a str) -> Result<&'a str, ConfigError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        ConfigError::new(
            name,
            "an http:// URL of the collector (TLS is not built in: use a local collector)",
        )
    })?;
    if rest.is_empty() || rest.starts_with('/') || url.chars().any(char::is_whitespace) {
        return Err(ConfigError::new(name, "an http:// URL with a host"));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(ConfigError::new(
            name,
            "a URL without credentials (they would be logged with the endpoint): put them \
             in OTEL_EXPORTER_OTLP_HEADERS",
        ));
    }
    Ok(url)
}

fn ratio(env: &Env) -> Result<f64, ConfigError> {
    env.parse_or("OTEL_TRACES_SAMPLER_ARG", 1.0, "a ratio from 0 to 1", |s| {
        s.parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r))
    })
}

fn sampler(env: &Env) -> Result<SamplerChoice, ConfigError> {
    let name = env
        .get("OTEL_TRACES_SAMPLER")
        .unwrap_or("parentbased_always_on");
    Ok(match name {
        "always_on" => SamplerChoice::AlwaysOn,
        "always_off" => SamplerChoice::AlwaysOff,
        "traceidratio" => SamplerChoice::TraceIdRatio(ratio(env)?),
        "parentbased_always_on" => SamplerChoice::ParentBased(RootSampler::AlwaysOn),
        "parentbased_always_off" => SamplerChoice::ParentBased(RootSampler::AlwaysOff),
        "parentbased_traceidratio" => {
            SamplerChoice::ParentBased(RootSampler::TraceIdRatio(ratio(env)?))
        }
        _ => {
            return Err(ConfigError::new(
                "OTEL_TRACES_SAMPLER",
                "always_on, always_off, traceidratio, parentbased_always_on, \
                 parentbased_always_off or parentbased_traceidratio",
            ));
        }
    })
}

/// `OTEL_RESOURCE_ATTRIBUTES` (`key=value,…`, values percent-encoded) with
/// `OTEL_SERVICE_NAME` over its `service.name`, and `farol` when neither names one.
fn resource(env: &Env) -> Result<Vec<(String, String)>, ConfigError> {
    let mut attributes = Vec::new();
    for pair in env
        .get("OTEL_RESOURCE_ATTRIBUTES")
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.trim().is_empty())
    {
        let decoded = pair.split_once('=').and_then(|(key, value)| {
            let key = key.trim();
            let value = percent_decode_str(value.trim()).decode_utf8().ok()?;
            (!key.is_empty()).then(|| (key.to_owned(), value.into_owned()))
        });
        let Some((key, value)) = decoded else {
            return Err(ConfigError::new(
                "OTEL_RESOURCE_ATTRIBUTES",
                "key=value pairs separated by commas, values percent-encoded UTF-8",
            ));
        };
        attributes.retain(|(k, _): &(String, String)| *k != key);
        attributes.push((key, value));
    }
    if !attributes.iter().any(|(k, _)| k == "service.version") {
        attributes.push(("service.version".into(), env!("CARGO_PKG_VERSION").into()));
    }
    let service = env.get("OTEL_SERVICE_NAME").map(str::trim);
    if let Some(service) = service.filter(|s| !s.is_empty()) {
        attributes.retain(|(k, _)| k != "service.name");
        attributes.insert(0, ("service.name".into(), service.into()));
    } else if !attributes.iter().any(|(k, _)| k == "service.name") {
        attributes.insert(0, ("service.name".into(), DEFAULT_SERVICE_NAME.into()));
    }
    Ok(attributes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Option<TraceSettings>, ConfigError> {
        TraceSettings::from_env(&Env::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn no_endpoint_means_no_tracing() {
        assert_eq!(settings(&[]).unwrap(), None);
        assert_eq!(settings(&[("OTEL_SERVICE_NAME", "x")]).unwrap(), None);
        let disabled = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ];
        assert_eq!(settings(&disabled).unwrap(), None);
    }

    #[test]
    fn http_appends_the_signal_path_to_the_base_endpoint_only() {
        let base = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")])
            .unwrap()
            .unwrap();
        assert_eq!(base.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(base.endpoint, "http://collector:4318/v1/traces");
        let signal = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:9/custom"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(signal.endpoint, "http://c:9/custom");
        let grpc = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (grpc.protocol, grpc.endpoint.as_str()),
            (OtlpProtocol::Grpc, "http://collector:4317")
        );
    }

    #[test]
    fn the_service_name_wins_over_the_resource_attributes_and_defaults_to_farol() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        let plain = settings(&[endpoint]).unwrap().unwrap();
        assert_eq!(plain.service_name(), "farol");
        let both = settings(&[
            endpoint,
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=a,deployment.environment.name=prod%20eu",
            ),
            ("OTEL_SERVICE_NAME", "b"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            both.resource,
            vec![
                ("service.name".into(), "b".into()),
                ("deployment.environment.name".into(), "prod eu".into()),
                ("service.version".into(), env!("CARGO_PKG_VERSION").into()),
            ]
        );
    }

    #[test]
    fn switched_off_nothing_else_is_read_and_incoming_traces_can_be_ignored() {
        let off = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url"),
            ("OTEL_SDK_DISABLED", "true"),
        ];
        assert_eq!(settings(&off).unwrap(), None);
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert!(settings(&[endpoint]).unwrap().unwrap().continue_incoming);
        let edge = settings(&[endpoint, ("OTEL_PROPAGATORS", "none")])
            .unwrap()
            .unwrap();
        assert!(!edge.continue_incoming);
    }

    #[test]
    fn samplers_and_their_ratio() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert_eq!(
            settings(&[endpoint]).unwrap().unwrap().sampler,
            SamplerChoice::ParentBased(RootSampler::AlwaysOn)
        );
        let ratio = settings(&[
            endpoint,
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            ratio.sampler,
            SamplerChoice::ParentBased(RootSampler::TraceIdRatio(0.01))
        );
    }

    #[test]
    fn each_bad_value_is_named() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        for (name, value) in [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
            ("OTEL_RESOURCE_ATTRIBUTES", "no-equals-sign"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
            ("OTEL_SDK_DISABLED", "perhaps"),
            ("OTEL_TRACES_EXPORTER", "jaeger"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://user:token@c:4318"), // pragma: allowlist secret (a made-up URL, refused for carrying credentials)
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100000"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization"),
            ("OTEL_PROPAGATORS", "b3"),
        ] {
            let mut pairs = vec![(name, value)];
            if name != endpoint.0 {
                pairs.push(endpoint);
            }
            if name == "OTEL_TRACES_SAMPLER_ARG" {
                pairs.push(("OTEL_TRACES_SAMPLER", "traceidratio"));
            }
            let err = settings(&pairs).unwrap_err();
            assert_eq!(err.variable, name, "{name}={value}: {err}");
        }
    }
}
