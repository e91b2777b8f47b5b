//! SNS: notifications published (with message attributes), topics checked.

use super::{Aws, Observed};
use crate::cloud::{Acting, AwsError, ErrorKind, Notifier};

impl Notifier for Aws {
    /// SNS `Publish` with message attributes; returns the message id.
    async fn publish(
        &self,
        _act: &Acting<'_>,
        topic_arn: &str,
        subject: &str,
        body: &str,
        attrs: &[(&str, &str)],
    ) -> Result<String, AwsError> {
        use aws_sdk_sns::types::MessageAttributeValue;
        let mut req = self
            .sns
            .publish()
            .topic_arn(topic_arn)
            .subject(subject)
            .message(body);
        for (k, v) in attrs {
            let v = if v.is_empty() { "-" } else { v };
            let a = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v.to_string())
                .build()
                .map_err(|e| {
                    AwsError::new(
                        "sns",
                        "Publish",
                        ErrorKind::Refused,
                        "InvalidParameter",
                        e.to_string(),
                    )
                })?;
            req = req.message_attributes(*k, a);
        }
        let r = req.send().observed("sns", "Publish").await?;
        Ok(r.message_id().unwrap_or_default().to_string())
    }

    /// Whether an SNS topic exists (`GetTopicAttributes`).
    async fn topic_exists(&self, arn: &str) -> Result<bool, AwsError> {
        match self
            .sns
            .get_topic_attributes()
            .topic_arn(arn)
            .send()
            .observed("sns", "GetTopicAttributes")
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}
