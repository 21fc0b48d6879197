//! MQTT: the records as QoS 1 messages on one topic, one record per message
//! (the JSON line without its newline), which is what consumers of
//! Quixote's `quixote-export -b HOST -t TOPIC` read.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::spool::Entry;
use crate::target::MqttTarget;

/// Records are at most 1 MiB; leave room for the topic and headers.
const MAX_PACKET: usize = 2 << 20;

struct Connection {
    client: AsyncClient,
    /// One `Ok` per PUBACK; an `Err` when the connection failed.
    acks: mpsc::UnboundedReceiver<Result<(), String>>,
    poller: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

/// Publishes batches of spool entries (QoS 1) and waits for the broker's PUBACKs.
///
/// After any failure the connection is dropped whole and the batch sent
/// again on a fresh one: acknowledgements of an earlier connection can then
/// never be counted for a later batch. QoS 1 is at least once, so a batch
/// interrupted after the broker took part of it can be delivered twice;
/// MQTT has no de-duplication ids to prevent that (NATS has).
pub struct MqttDestination {
    target: MqttTarget,
    client_id: String,
    batch: usize,
    connection: Option<Connection>,
    /// A send was started and did not finish (it was cancelled).
    unfinished: bool,
}

impl MqttDestination {
    /// A destination (nothing is connected before the first batch).
    pub fn new(target: MqttTarget, client_id: String, batch: usize) -> MqttDestination {
        MqttDestination {
            client_id: target.client_id.clone().unwrap_or(client_id),
            target,
            batch,
            connection: None,
            unfinished: false,
        }
    }

    /// How long the broker may take to answer.
    pub fn timeout(&self) -> Duration {
        self.target.timeout
    }

    fn connect(&mut self) -> &mut Connection {
        self.connection.get_or_insert_with(|| {
            let mut options =
                MqttOptions::new(&self.client_id, &self.target.host, self.target.port);
            options
                .set_keep_alive(Duration::from_secs(30))
                .set_clean_session(true)
                .set_max_packet_size(MAX_PACKET, MAX_PACKET)
                .set_inflight(self.batch.clamp(1, u16::MAX as usize) as u16);
            let (client, mut eventloop) = AsyncClient::new(options, self.batch + 16);
            // One write per message: without this, Nagle's algorithm holds
            // each small write back for the previous one's acknowledgement.
            let mut network = eventloop.network_options();
            network.set_tcp_nodelay(true);
            eventloop.set_network_options(network);
            let (tx, acks) = mpsc::unbounded_channel();
            let poller = tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::PubAck(_))) => {
                            if tx.send(Ok(())).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let _ = tx.send(Err(format!("mqtt: {e}")));
                            return;
                        }
                    }
                }
            });
            Connection {
                client,
                acks,
                poller,
            }
        })
    }

    /// Publishes `entries` in order (QoS 1) and waits until the broker
    /// acknowledged each; returns 0 (MQTT reports no duplicates).
    pub async fn send(&mut self, entries: &[Entry]) -> Result<u64, String> {
        let timeout = self.target.timeout;
        if std::mem::replace(&mut self.unfinished, true) {
            // Acknowledgements of a cancelled batch may still come: start afresh.
            self.connection = None;
        }
        let connection = self.connect();
        let result = async {
            for e in entries {
                tokio::time::timeout(
                    timeout,
                    connection.client.publish_bytes(
                        e.subject.as_str(),
                        QoS::AtLeastOnce,
                        false,
                        e.payload.clone(),
                    ),
                )
                .await
                .map_err(|_| "mqtt: publishing timed out".to_owned())?
                .map_err(|e| format!("mqtt: {e}"))?;
            }
            let mut acked = 0;
            while acked < entries.len() {
                match tokio::time::timeout(timeout, connection.acks.recv()).await {
                    Ok(Some(Ok(()))) => acked += 1,
                    Ok(Some(Err(e))) => return Err(e),
                    Ok(None) => return Err("mqtt: connection closed".to_owned()),
                    Err(_) => return Err("mqtt: no acknowledgement in time".to_owned()),
                }
            }
            Ok(0)
        }
        .await;
        if result.is_err() {
            self.connection = None;
        }
        self.unfinished = false;
        result
    }

    /// Disconnects politely.
    pub async fn close(&mut self) {
        if let Some(c) = self.connection.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), c.client.disconnect()).await;
            // Let the event loop send the DISCONNECT before it is stopped.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
