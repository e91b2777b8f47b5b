//! `AwsError`: what went wrong talking to AWS (service, operation, AWS's code and message,
//! never a credential or a signed URL), with the kind of failure the code branches on.

use std::fmt;

/// What kind of failure an AWS call had: what the code decides on (retry, a missing resource,
/// a denial to report), where `code` is AWS's own word for it (logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Throttling, a 5xx, a malformed or cut-short answer: trying again later may succeed.
    Transient,
    /// AWS could not be asked at all: no credentials, no connection, no answer in time.
    Unreachable,
    /// The credentials were refused (invalid, expired, a signature that does not match).
    Credentials,
    /// Refused for lack of permission (`AccessDenied…`, `AuthorizationError`, …).
    Denied,
    /// The resource does not exist.
    NotFound,
    /// A conditional write's condition failed (DynamoDB).
    ConditionFailed,
    /// This replica does not hold the HA lease now: a call that changes AWS is left to the leader.
    NotLeader,
    /// Anything else AWS refused (validation, bad input): trying again will not help.
    Refused,
}

impl ErrorKind {
    /// Whether trying again later may succeed.
    pub fn transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Transient | ErrorKind::Unreachable | ErrorKind::NotLeader
        )
    }
}

/// What went wrong talking to AWS.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsError {
    pub service: &'static str,
    pub operation: &'static str,
    pub kind: ErrorKind,
    /// The AWS error code (`ThrottlingException`, `ValidationException`, …), or the kind of
    /// transport failure (`Timeout`, `ConnectionError`, `NoCredentials`).
    pub code: String,
    pub message: String,
}

impl AwsError {
    /// The IAM action the call needs, as `iam-policy` names it: from AWS's message when it
    /// says ("… is not authorized to perform: X on …"), else from the operation (S3's listing
    /// is authorized as `s3:ListBucket`).
    pub fn iam_action(&self) -> String {
        if let Some(i) = self.message.find("perform: ") {
            let rest = &self.message[i + 9..];
            let end = rest
                .find(|c: char| c.is_whitespace() || matches!(c, ',' | '<' | '"' | ';'))
                .unwrap_or(rest.len());
            return rest[..end].to_string();
        }
        match (self.service, self.operation) {
            ("s3", "ListObjectsV2") => "s3:ListBucket".into(),
            (s, o) => format!("{s}:{o}"),
        }
    }

    pub fn new(
        service: &'static str,
        operation: &'static str,
        kind: ErrorKind,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> AwsError {
        AwsError {
            service,
            operation,
            kind,
            code: code.into(),
            message: message.into(),
        }
    }

    /// Whether trying again later may succeed.
    pub fn transient(&self) -> bool {
        self.kind.transient()
    }

    /// A call that changes AWS, refused because this replica does not lead (HA).
    pub(crate) fn not_leader() -> AwsError {
        AwsError::new(
            "mlopsd",
            "act",
            ErrorKind::NotLeader,
            "NotLeader",
            "this replica does not hold the HA lease now; the call is left to the leader",
        )
    }

    /// An answer without a field it must have.
    pub(crate) fn malformed(service: &'static str, operation: &'static str, field: &str) -> Self {
        AwsError::new(
            service,
            operation,
            ErrorKind::Transient,
            "MalformedResponse",
            format!("response has no {field}"),
        )
    }
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} failed: {}: {}",
            self.service, self.operation, self.code, self.message
        )
    }
}

impl std::error::Error for AwsError {}
