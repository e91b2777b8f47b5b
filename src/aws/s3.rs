//! S3: objects read as text (gates' evaluation reports).

use super::{Aws, Observed};
use crate::cloud::{AwsError, ErrorKind, Objects};

impl Objects for Aws {
    /// Reads an S3 object (`s3://bucket/key`) as text.
    async fn read_s3(&self, uri: &str) -> Result<String, AwsError> {
        let (bucket, key) = uri
            .strip_prefix("s3://")
            .and_then(|r| r.split_once('/'))
            .ok_or_else(|| {
                AwsError::new(
                    "s3",
                    "GetObject",
                    ErrorKind::Refused,
                    "InvalidUri",
                    format!("not an s3://bucket/key URI: {uri}"),
                )
            })?;
        let r = self
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .observed("s3", "GetObject")
            .await?;
        let bytes = r.body.collect().await.map_err(|e| {
            AwsError::new(
                "s3",
                "GetObject",
                ErrorKind::Transient,
                "ResponseError",
                e.to_string(),
            )
        })?;
        String::from_utf8(bytes.into_bytes().to_vec()).map_err(|_| {
            AwsError::new(
                "s3",
                "GetObject",
                ErrorKind::Refused,
                "InvalidReport",
                format!("{uri} is not UTF-8 text"),
            )
        })
    }
}
