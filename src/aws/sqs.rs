//! SQS: the `[events]` queue, long-polled, its handled messages deleted.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;

use super::{Aws, Observed};
use crate::cloud::{Acting, AwsError, ErrorKind, Queue, QueueMessage, RECEIVE_WAIT};

impl Queue for Aws {
    /// One long poll (`ReceiveMessage`, 20 s, up to 10 messages, the queue's own visibility
    /// timeout). Its attempt may take the whole wait, so its timeout is the wait plus 10 s.
    async fn receive_events(&self, queue_url: &str) -> Result<Vec<QueueMessage>, AwsError> {
        let timeouts = TimeoutConfig::builder()
            .operation_attempt_timeout(RECEIVE_WAIT + Duration::from_secs(10))
            .operation_timeout(RECEIVE_WAIT * 3)
            .build();
        let r = self
            .sqs
            .receive_message()
            .queue_url(queue_url)
            .wait_time_seconds(RECEIVE_WAIT.as_secs() as i32)
            .max_number_of_messages(10)
            .customize()
            .config_override(aws_sdk_sqs::config::Builder::default().timeout_config(timeouts))
            .send()
            .observed("sqs", "ReceiveMessage")
            .await?;
        Ok(r.messages()
            .iter()
            .filter_map(|m| {
                Some(QueueMessage {
                    message_id: m.message_id()?.to_string(),
                    receipt: m.receipt_handle()?.to_string(),
                    body: m.body().unwrap_or_default().to_string(),
                })
            })
            .collect())
    }

    /// Deletes handled messages with `DeleteMessageBatch`, 10 a call (AWS authorizes it as
    /// `sqs:DeleteMessage`). An entry the batch reports failed is tried once more in the next
    /// batch; what fails again is left to the visibility timeout (its event id is remembered, so
    /// the redelivery causes nothing) and counted in the answer.
    async fn delete_events(
        &self,
        _act: &Acting<'_>,
        queue_url: &str,
        receipts: &[String],
    ) -> Result<usize, AwsError> {
        let mut todo: Vec<&String> = receipts.iter().collect();
        let mut left = 0;
        for round in 0..2 {
            let mut failed = Vec::new();
            for chunk in todo.chunks(10) {
                let entries = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(r.as_str())
                            .build()
                            .map_err(|_| {
                                AwsError::malformed("sqs", "DeleteMessageBatch", "Entries")
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let out = self
                    .sqs
                    .delete_message_batch()
                    .queue_url(queue_url)
                    .set_entries(Some(entries))
                    .send()
                    .observed("sqs", "DeleteMessageBatch")
                    .await?;
                for f in out.failed() {
                    match f.id().parse::<usize>().ok().and_then(|i| chunk.get(i)) {
                        Some(r) => failed.push(*r),
                        None => left += 1,
                    }
                }
            }
            if failed.is_empty() {
                break;
            }
            if round == 1 {
                left += failed.len();
                break;
            }
            todo = failed;
        }
        Ok(left)
    }

    /// Whether an SQS queue exists (`GetQueueAttributes`).
    async fn queue_exists(&self, url: &str) -> Result<bool, AwsError> {
        match self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .observed("sqs", "GetQueueAttributes")
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}
