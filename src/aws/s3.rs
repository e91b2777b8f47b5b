//! S3: objects read as text (gates' evaluation reports, drift reports), and the newest object
//! under a prefix.

use super::endpoints::time;
use super::{Aws, Observed};
use crate::cloud::{AwsError, ErrorKind, ObjectRef, Objects};

fn too_large(bucket: &str, key: &str, size: i64, max: usize) -> AwsError {
    AwsError::new(
        "s3",
        "GetObject",
        ErrorKind::Refused,
        "TooLarge",
        format!("s3://{bucket}/{key} is {size} bytes, over the {max}-byte limit"),
    )
}

impl Objects for Aws {
    async fn newest_object(
        &self,
        bucket: &str,
        prefix: &str,
        suffix: Option<&str>,
    ) -> Result<Option<ObjectRef>, AwsError> {
        let mut best: Option<ObjectRef> = None;
        let mut token: Option<String> = None;
        loop {
            let r = self
                .s3
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .observed("s3", "ListObjectsV2")
                .await?;
            for o in r.contents() {
                let Some(key) = o.key() else { continue };
                if key.ends_with('/') || suffix.is_some_and(|s| !key.ends_with(s)) {
                    continue;
                }
                let this = ObjectRef {
                    key: key.to_string(),
                    etag: o.e_tag().unwrap_or_default().trim_matches('"').to_string(),
                    last_modified: time(o.last_modified()),
                    size: o.size().unwrap_or(0),
                };
                let newer = match &best {
                    None => true,
                    Some(b) => (this.last_modified, &this.key) > (b.last_modified, &b.key),
                };
                if newer {
                    best = Some(this);
                }
            }
            match r.next_continuation_token() {
                Some(t) if r.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => return Ok(best),
            }
        }
    }

    async fn read_object(&self, bucket: &str, key: &str, max: usize) -> Result<String, AwsError> {
        let r = self
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .observed("s3", "GetObject")
            .await?;
        let size = r.content_length().unwrap_or(0);
        if usize::try_from(size).unwrap_or(usize::MAX) > max {
            return Err(too_large(bucket, key, size, max));
        }
        let bytes = r.body.collect().await.map_err(|e| {
            AwsError::new(
                "s3",
                "GetObject",
                ErrorKind::Transient,
                "ResponseError",
                e.to_string(),
            )
        })?;
        let bytes = bytes.into_bytes();
        if bytes.len() > max {
            return Err(too_large(bucket, key, bytes.len() as i64, max));
        }
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            AwsError::new(
                "s3",
                "GetObject",
                ErrorKind::Refused,
                "InvalidReport",
                format!("s3://{bucket}/{key} is not UTF-8 text"),
            )
        })
    }

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
        self.read_object(bucket, key, usize::MAX).await
    }
}
