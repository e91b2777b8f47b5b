//! Every SDK error becomes an `AwsError` here, in one place: AWS's code and message, the kind
//! the code branches on, and transport failures told by what a person can act on (no
//! credentials: which sources were tried; no connection: the endpoint and the OS error).
//! Nothing that looks like a credential or a signed URL passes through.

use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::cloud::{AwsError, ErrorKind};

pub(super) type HttpResponse = aws_smithy_runtime_api::client::orchestrator::HttpResponse;
pub(super) type SdkError<E> = aws_smithy_runtime_api::client::result::SdkError<E, HttpResponse>;

/// The `<Code>` of an XML error body (query or EC2 shape), if there is one.
fn body_code(raw: &HttpResponse) -> Option<String> {
    let t = String::from_utf8_lossy(raw.body().bytes()?);
    let start = t.find("<Code>")? + 6;
    let end = t[start..].find("</Code>")? + start;
    Some(t[start..end].to_string())
}

/// The `<Message>` of an XML error body, if there is one.
fn body_message(raw: &HttpResponse) -> Option<String> {
    let t = String::from_utf8_lossy(raw.body().bytes()?);
    let start = t.find("<Message>")? + 9;
    let end = t[start..].find("</Message>")? + start;
    Some(scrub(&t[start..end]))
}

/// AWS's own message of an answer the SDK could not parse, else "HTTP 403 <start of the body>".
fn body_summary(raw: &HttpResponse) -> String {
    if let Some(m) = body_message(raw) {
        return m;
    }
    let body = raw
        .body()
        .bytes()
        .map(|b| String::from_utf8_lossy(&b[..b.len().min(400)]).into_owned())
        .unwrap_or_default();
    scrub(&format!(
        "HTTP {} {}",
        raw.status().as_u16(),
        body.split_whitespace().collect::<Vec<_>>().join(" ")
    ))
}

pub(super) fn classify<E>(
    service: &'static str,
    operation: &'static str,
    e: SdkError<E>,
) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let refused = |raw: &HttpResponse| {
        (400..500).contains(&raw.status().as_u16()) && raw.status().as_u16() != 429
    };
    // The SDK's own form, for whoever turns on MLOPSD_LOG=debug (responses, never requests:
    // no credential is in it).
    tracing::debug!(service, operation, detail = %scrub(&format!("{e:?}")), "AWS error detail");
    if let SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) = &e {
        let (code, message) = transport_error(service, &e);
        return AwsError::new(service, operation, ErrorKind::Unreachable, code, message);
    }
    let (code, message, status) = match &e {
        // An answer the SDK could not parse. A 4xx is still a refusal (some endpoints send XML
        // or HTML error bodies where JSON is expected): take its code from the body.
        SdkError::ResponseError(re) if refused(re.raw()) => {
            let status = re.raw().status().as_u16();
            let code = body_code(re.raw()).unwrap_or_else(|| {
                if status == 403 {
                    "AccessDenied".into()
                } else {
                    format!("HTTP{status}")
                }
            });
            (code, body_summary(re.raw()), Some(status))
        }
        SdkError::ResponseError(re) => (
            "ResponseError".to_string(),
            context(&e),
            Some(re.raw().status().as_u16()),
        ),
        SdkError::ConstructionFailure(_) => ("RequestConstruction".to_string(), context(&e), None),
        SdkError::ServiceError(se) => {
            // Some endpoints answer in the EC2 error shape (<Errors><Error><Code>…), which the
            // query-protocol parser does not read; then the code comes from the body.
            let code = se
                .err()
                .code()
                .map(str::to_string)
                .or_else(|| body_code(se.raw()))
                .unwrap_or_else(|| "Unknown".to_string());
            let message = se
                .err()
                .message()
                .map(str::to_string)
                .unwrap_or_else(|| body_summary(se.raw()));
            (code, message, Some(se.raw().status().as_u16()))
        }
        _ => ("Unknown".to_string(), context(&e), None),
    };
    let kind = kind_of(&code, &message, status);
    AwsError::new(service, operation, kind, code, message)
}

/// The kind of an answer AWS gave: by its code, then its HTTP status.
fn kind_of(code: &str, message: &str, status: Option<u16>) -> ErrorKind {
    const THROTTLED: &[&str] = &[
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalError",
        "Unknown",
    ];
    const CREDENTIALS: &[&str] = &[
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "UnrecognizedClientException",
    ];
    const DENIED: &[&str] = &[
        "AuthorizationError",
        "UnauthorizedOperation",
        "AuthorizationErrorException",
    ];
    const NOT_FOUND: &[&str] = &[
        "ResourceNotFound",
        "ResourceNotFoundException",
        "NotFound",
        "NotFoundException",
        "NoSuchKey",
        "NoSuchBucket",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
    ];
    if code == "ResponseError" {
        // An answer that is not AWS's (a proxy's page, a cut body): as good as none.
        ErrorKind::Unreachable
    } else if CREDENTIALS.contains(&code) {
        ErrorKind::Credentials
    } else if code.contains("AccessDenied")
        || DENIED.contains(&code)
        || message.contains("not authorized to perform")
    {
        ErrorKind::Denied
    } else if NOT_FOUND.contains(&code)
        || code.contains("NonExistentQueue")
        || code.contains("QueueDoesNotExist")
    {
        ErrorKind::NotFound
    } else if code == "ConditionalCheckFailedException" {
        ErrorKind::ConditionFailed
    } else if THROTTLED.contains(&code) || status.is_some_and(|s| s >= 500 || s == 429) {
        ErrorKind::Transient
    } else {
        ErrorKind::Refused
    }
}

/// The error's whole chain of causes ("… connection refused"), scrubbed.
fn context<E: std::error::Error + 'static>(e: &E) -> String {
    scrub(&format!(
        "{}",
        aws_smithy_types::error::display::DisplayErrorContext(e)
    ))
}

/// What `[aws]` says about where calls go, for messages (set once, when the SDK config is built).
pub(super) struct Target {
    pub(super) endpoint_url: Option<String>,
    pub(super) region: String,
    pub(super) profile: Option<String>,
}

pub(super) static TARGET: std::sync::OnceLock<Target> = std::sync::OnceLock::new();

/// The endpoint a service's calls go to, as a person would look for it.
fn endpoint_of(service: &str) -> String {
    let t = TARGET.get();
    if let Some(u) = t.and_then(|t| t.endpoint_url.clone()) {
        return u;
    }
    let region = t
        .map(|t| t.region.as_str())
        .filter(|r| !r.is_empty())
        .unwrap_or("us-east-1");
    let host = match service {
        "sagemaker" => "api.sagemaker",
        "cloudwatch" => "monitoring",
        other => other,
    };
    format!("https://{host}.{region}.amazonaws.com")
}

/// A timeout or a failure to send: no credentials (which sources were tried, how to give
/// one), or a connection failure (the endpoint and the OS error). One line, no SDK dump.
fn transport_error<E: std::error::Error + 'static>(service: &str, e: &E) -> (String, String) {
    let full = format!(
        "{}",
        aws_smithy_types::error::display::DisplayErrorContext(e)
    );
    let endpoint = endpoint_of(service);
    if full.contains("credentials") {
        let profile = TARGET
            .get()
            .and_then(|t| t.profile.clone())
            .or_else(|| std::env::var("AWS_PROFILE").ok());
        let tried = match &profile {
            Some(p) => format!("the profile \"{p}\" in ~/.aws/config and ~/.aws/credentials"),
            None => "the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), the default profile in ~/.aws/config and ~/.aws/credentials".to_string(),
        };
        return (
            "NoCredentials".into(),
            format!(
                "no AWS credentials: tried {tried}, web identity (AWS_WEB_IDENTITY_TOKEN_FILE), the ECS container role and the EC2 instance role (IMDS); none gave any. Set AWS_PROFILE or [aws] profile, export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run on an instance with a role"
            ),
        );
    }
    // The innermost cause is the OS's ("Connection refused (os error 111)").
    let mut src: &(dyn std::error::Error + 'static) = e;
    while let Some(s) = src.source() {
        src = s;
    }
    let root = scrub(&src.to_string());
    if full.contains("timeout") || full.contains("timed out") || root.contains("timed out") {
        let limit = TARGET
            .get()
            .map(|_| "aws.attempt_timeout")
            .unwrap_or("the timeout");
        return (
            "Timeout".into(),
            format!("no answer from {endpoint} within {limit} ({root})"),
        );
    }
    (
        "ConnectionError".into(),
        format!("cannot connect to {endpoint}: {root}"),
    )
}

/// Removes anything that looks like a signed URL query or a key from a transport message.
pub(super) fn scrub(s: &str) -> String {
    s.split_whitespace()
        .map(|w| {
            if w.contains("X-Amz-") || w.contains("Signature=") || w.contains("Credential=") {
                "[redacted]"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_hides_signed_url_parts() {
        let s = scrub("error sending https://x/?X-Amz-Signature=abc&X-Amz-Credential=AKIA to host");
        assert!(!s.contains("AKIA"));
        assert!(s.contains("[redacted]"));
    }

    #[test]
    fn kinds_follow_codes_then_status() {
        assert_eq!(
            kind_of("ThrottlingException", "", Some(400)),
            ErrorKind::Transient
        );
        assert_eq!(kind_of("Whatever", "", Some(503)), ErrorKind::Transient);
        assert_eq!(
            kind_of("AccessDeniedException", "", Some(400)),
            ErrorKind::Denied
        );
        assert_eq!(
            kind_of(
                "Other",
                "User x is not authorized to perform: sns:Publish",
                Some(403)
            ),
            ErrorKind::Denied
        );
        assert_eq!(
            kind_of("ResourceNotFound", "", Some(400)),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind_of("ConditionalCheckFailedException", "", Some(400)),
            ErrorKind::ConditionFailed
        );
        assert_eq!(
            kind_of("ValidationException", "", Some(400)),
            ErrorKind::Refused
        );
        assert_eq!(
            kind_of("ExpiredToken", "", Some(403)),
            ErrorKind::Credentials
        );
        assert_eq!(
            kind_of("ResponseError", "", Some(502)),
            ErrorKind::Unreachable
        );
    }
}
