//! `--publish mqtt://… --topic T`: every record once, as a QoS 1 message
//! whose payload is the record's line without its newline (what consumers
//! of `quixote-export -b HOST -t T` read).

mod common;
mod fleet_common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use fleet_common::*;
use tsem_fleet::clients::rumqttc::{Client, Event, MqttOptions, Packet, QoS};

#[test]
fn a_subscriber_gets_every_record_once_byte_for_byte() {
    let Some(url) = mqtt_url("a_subscriber_gets_every_record_once") else {
        return;
    };
    let target = tsem_fleet::Target::parse(&url).unwrap();
    let tsem_fleet::Server::Mqtt(broker) = target.server else {
        panic!("{url} is not mqtt")
    };
    let topic = format!("tsem-test/{}", unique("m"));
    let mut options = MqttOptions::new(unique("sub"), broker.host.clone(), broker.port);
    options
        .set_keep_alive(Duration::from_secs(10))
        .set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut connection) = Client::new(options, 64);
    client.subscribe(&topic, QoS::AtLeastOnce).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let subscriber = std::thread::spawn(move || {
        for event in connection.iter() {
            match event {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = tx.send(None);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(Some(p.payload.to_vec())).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    // Subscribed before anything is published.
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), None);

    let tmp = tempfile::tempdir().unwrap();
    let events = conformance("events.jsonl");
    let out = run(&[
        "run",
        "--input",
        events.to_str().unwrap(),
        "--publish",
        &url,
        "--topic",
        &topic,
        "--host",
        "h1",
        "--publish-buffer",
        tmp.path().to_str().unwrap(),
        "--summary",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &s["publish"][0];
    assert_eq!(p["published"], 3000, "{p}");
    assert_eq!(p["subject"], topic.as_str());
    assert_eq!(
        (p["dropped"].as_u64(), p["pending"].as_u64()),
        (Some(0), Some(0))
    );

    let want: Vec<Vec<u8>> = std::fs::read(&events)
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let mut got = Vec::new();
    let t0 = Instant::now();
    while got.len() < want.len() && t0.elapsed() < Duration::from_secs(15) {
        if let Ok(Some(payload)) = rx.recv_timeout(Duration::from_millis(200)) {
            got.push(payload);
        }
    }
    // Nothing more arrives (no record twice).
    std::thread::sleep(Duration::from_millis(300));
    while let Ok(Some(payload)) = rx.try_recv() {
        got.push(payload);
    }
    let _ = client.disconnect();
    drop(rx);
    let _ = subscriber.join();
    assert_eq!(got.len(), want.len(), "messages received");
    // Byte-identical, each once (one publisher on one connection: in order, too).
    let mut count: HashMap<&[u8], i64> = HashMap::new();
    for w in &want {
        *count.entry(w).or_default() += 1;
    }
    for g in &got {
        *count.entry(g).or_default() -= 1;
    }
    assert!(
        count.values().all(|&n| n == 0),
        "a record is missing or twice"
    );
    assert_same_lines(
        &got.iter()
            .map(|g| String::from_utf8_lossy(g).into_owned())
            .collect::<Vec<_>>(),
        &want
            .iter()
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect::<Vec<_>>(),
        "mqtt payloads",
    );
}
