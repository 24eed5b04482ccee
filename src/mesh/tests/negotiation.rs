//! Hosts on loopback negotiating moves over authenticated TCP: bids, reservations, leases,
//! concurrent sources, a peer with the wrong key, a silent peer, a replayed frame, and a grant
//! whose answer is lost.

use augur_mesh::{
    commit, negotiate, release, renew, BidOutcome, Demand, HorizonDemand, Ledger, MeshKey, Message,
    Node, Offer, Peer,
};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TIMEOUT: Duration = Duration::from_secs(2);

fn key(b: u8) -> MeshKey {
    MeshKey::from_bytes(&[b; 32]).unwrap()
}

fn demand(cpu: f64) -> Demand {
    Demand {
        cpu,
        memory_mib: cpu * 1024.0,
        disk_bps: 0.0,
        net_bps: 0.0,
    }
}

fn forecast(cpu: f64) -> Vec<HorizonDemand> {
    [300, 900, 3600]
        .into_iter()
        .map(|horizon_s| HorizonDemand {
            horizon_s,
            mean: demand(cpu * 0.8),
            upper: demand(cpu),
        })
        .collect()
}

fn offer(id: u64, vm: &str, cpu: f64) -> Offer {
    Offer {
        offer_id: id,
        vm: vm.into(),
        memory_mib: (cpu * 1024.0) as u64,
        vcpus: 2,
        forecast: forecast(cpu),
        migration_s: 2.0,
    }
}

/// A host with 16 vCPUs and 16 GiB, its own VMs forecast at `own_cpu`, limit 80%.
fn host(name: &str, own_cpu: f64, k: &MeshKey) -> Arc<Node> {
    let mut ledger = Ledger::new(demand(16.0), 0.8);
    ledger.set_own(forecast(own_cpu), &[]);
    Node::new(name, k.clone(), ledger)
}

async fn serve(node: &Arc<Node>) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(node.clone().serve(listener, rx));
    (addr, stop)
}

#[tokio::test]
async fn the_source_reserves_with_the_target_whose_forecast_holds_the_vm() {
    let k = key(7);
    let source = host("src", 14.0, &k);
    let roomy = host("roomy", 4.0, &k);
    let full = host("full", 11.0, &k);
    let (a, _sa) = serve(&roomy).await;
    let (b, _sb) = serve(&full).await;
    let peers = [
        Peer {
            id: "roomy".into(),
            addr: a,
        },
        Peer {
            id: "full".into(),
            addr: b,
        },
    ];
    let started = Instant::now();
    let n = negotiate(
        &source,
        offer(1, "web", 3.0),
        &peers,
        Duration::from_secs(30),
        TIMEOUT,
    )
    .await;
    println!("negotiation on loopback: {:?}", started.elapsed());
    let grant = n.grant.clone().expect("roomy grants");
    assert_eq!(grant.peer.id, "roomy");
    let declined = n.bids.iter().find(|(h, _)| h == "full").unwrap();
    assert!(
        matches!(&declined.1, BidOutcome::Declined { reason } if reason.contains("cpu")),
        "{declined:?}"
    );
    assert_eq!(
        roomy
            .ledger
            .lock()
            .unwrap()
            .reservations(Instant::now())
            .len(),
        1
    );
    commit(&source, &grant, TIMEOUT).await.unwrap();
    let ledger = roomy.ledger.lock().unwrap();
    assert!(ledger.reservations(Instant::now()).is_empty());
    // The arrived VM is counted: 4 + 3 of 12.8 allowed leaves 5.8 vCPUs at every horizon.
    assert!((ledger.headroom(Instant::now())[0].upper.cpu - 5.8).abs() < 1e-9);
}

#[tokio::test]
async fn two_sources_at_once_never_double_book_one_target() {
    let k = key(7);
    let target = host("target", 8.0, &k);
    let (addr, _stop) = serve(&target).await;
    let peers = vec![Peer {
        id: "target".into(),
        addr,
    }];
    // 8 + 3 fits under 12.8; 8 + 3 + 3 does not.
    let (s1, s2) = (host("s1", 15.0, &k), host("s2", 15.0, &k));
    let (p1, p2) = (peers.clone(), peers.clone());
    let a = tokio::spawn(async move {
        negotiate(
            &s1,
            offer(1, "vm1", 3.0),
            &p1,
            Duration::from_secs(30),
            TIMEOUT,
        )
        .await
    });
    let b = tokio::spawn(async move {
        negotiate(
            &s2,
            offer(1, "vm2", 3.0),
            &p2,
            Duration::from_secs(30),
            TIMEOUT,
        )
        .await
    });
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let granted = [&a, &b].iter().filter(|n| n.grant.is_some()).count();
    assert_eq!(granted, 1, "{a:?}\n{b:?}");
    let loser = if a.grant.is_some() { &b } else { &a };
    // Both bid (a bid reserves nothing); the loser's reservation was refused with the reason.
    assert!(
        loser
            .refusals
            .iter()
            .any(|(_, r)| r.contains("would reach")),
        "{loser:?}"
    );
    assert_eq!(
        target
            .ledger
            .lock()
            .unwrap()
            .reservations(Instant::now())
            .len(),
        1
    );
}

#[tokio::test]
async fn a_peer_with_the_wrong_key_is_not_heard_and_hears_nothing() {
    let source = host("src", 14.0, &key(7));
    let stranger = host("stranger", 0.0, &key(9));
    let (addr, _stop) = serve(&stranger).await;
    let peers = [Peer {
        id: "stranger".into(),
        addr,
    }];
    let n = negotiate(
        &source,
        offer(1, "web", 1.0),
        &peers,
        Duration::from_secs(30),
        TIMEOUT,
    )
    .await;
    assert!(n.grant.is_none());
    assert!(matches!(&n.bids[0].1, BidOutcome::Failed { .. }), "{n:?}");
    assert_eq!(stranger.auth_failures.load(Ordering::Relaxed), 1);
    assert!(stranger
        .ledger
        .lock()
        .unwrap()
        .reservations(Instant::now())
        .is_empty());
}

#[tokio::test]
async fn a_silent_peer_times_out_and_a_dead_sources_lease_runs_out() {
    let k = key(7);
    // A partitioned peer: accepts, never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let target = host("target", 8.0, &k);
    let (addr, _stop) = serve(&target).await;
    let source = host("src", 15.0, &k);
    let peers = [
        Peer {
            id: "silent".into(),
            addr: silent_addr,
        },
        Peer {
            id: "target".into(),
            addr,
        },
    ];
    let started = Instant::now();
    let n = negotiate(
        &source,
        offer(1, "vm1", 4.0),
        &peers,
        Duration::from_millis(1000),
        Duration::from_millis(500),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the silent peer did not hold things up"
    );
    assert!(
        matches!(&n.bids[0].1, BidOutcome::Failed { reason } if reason.contains("did not answer")),
        "{n:?}"
    );
    assert!(n.grant.is_some());
    // The source "dies" here: no commit, no release. The lease (1 s) runs out.
    let other = host("other", 15.0, &k);
    let again = offer(2, "vm2", 4.0);
    let blocked = negotiate(
        &other,
        again.clone(),
        &peers[1..],
        Duration::from_secs(5),
        TIMEOUT,
    )
    .await;
    assert!(blocked.grant.is_none(), "the room is still reserved");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let freed = negotiate(&other, again, &peers[1..], Duration::from_secs(5), TIMEOUT).await;
    let grant = freed.grant.expect("the expired lease freed the room");
    release(&other, &grant, TIMEOUT).await.unwrap();
    assert!(target
        .ledger
        .lock()
        .unwrap()
        .reservations(Instant::now())
        .is_empty());
}

#[tokio::test]
async fn a_replayed_frame_gets_no_answer() {
    let k = key(7);
    let target = host("target", 0.0, &k);
    let (addr, _stop) = serve(&target).await;
    // Record a real request on its way out.
    let frame = augur_mesh::frame::encode(
        &k,
        &augur_mesh::Envelope {
            from: "src".into(),
            to: "target".into(),
            seq: 42,
            sent_ms: augur_mesh::node::now_ms(),
            reply_to: None,
            msg: Message::Ping,
        },
    )
    .unwrap();
    let exchange = |frame: Vec<u8>| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&frame).await.unwrap();
        let mut buf = vec![0u8; 4096];
        tokio::time::timeout(TIMEOUT, s.read(&mut buf))
            .await
            .map(|r| r.unwrap_or(0))
            .unwrap_or(0)
    };
    assert!(
        exchange(frame.clone()).await > 0,
        "the first one is answered"
    );
    assert_eq!(exchange(frame).await, 0, "the replay is not");
    assert_eq!(target.auth_failures.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_frame_for_another_host_is_refused() {
    let k = key(7);
    let target = host("target", 0.0, &k);
    let (addr, _stop) = serve(&target).await;
    let source = host("src", 0.0, &k);
    // A reservation meant for "elsewhere", delivered here (a frame copied off the wire).
    let answer = source
        .request(
            addr,
            "elsewhere",
            Message::Reserve {
                offer: offer(1, "vm", 1.0),
                lease_ms: 30_000,
            },
            TIMEOUT,
        )
        .await;
    assert!(answer.is_err(), "{answer:?}");
    assert_eq!(target.auth_failures.load(Ordering::Relaxed), 1);
    assert!(target
        .ledger
        .lock()
        .unwrap()
        .reservations(Instant::now())
        .is_empty());
    // Addressed to it, the same request is served.
    let answer = source
        .request(
            addr,
            "target",
            Message::Reserve {
                offer: offer(2, "vm", 1.0),
                lease_ms: 30_000,
            },
            TIMEOUT,
        )
        .await
        .unwrap();
    assert!(matches!(answer.msg, Message::Granted { .. }), "{answer:?}");
}

/// Between the source and `target`: passes every exchange whole but the `lossy`-th (counting
/// from 0), whose request reaches the target and whose answer is dropped.
async fn lossy_proxy(target: SocketAddr, lossy: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut client, _)) = listener.accept().await {
            let mut upstream = TcpStream::connect(target).await.unwrap();
            if n == lossy {
                tokio::spawn(async move {
                    let (mut from_client, _to_client) = client.split();
                    let (mut from_target, mut to_target) = upstream.split();
                    let forward = tokio::io::copy(&mut from_client, &mut to_target);
                    let mut answer = [0u8; 1];
                    // Once the target starts answering, the whole exchange is cut.
                    tokio::select! {
                        _ = forward => {}
                        _ = from_target.read_exact(&mut answer) => {}
                    }
                });
            } else {
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
            n += 1;
        }
    });
    addr
}

#[tokio::test]
async fn a_grant_lost_on_its_way_back_is_withdrawn() {
    let k = key(7);
    let target = host("target", 4.0, &k);
    let (addr, _stop) = serve(&target).await;
    // The offer passes; the answer to the reservation is lost.
    let proxy = lossy_proxy(addr, 1).await;
    let source = host("src", 15.0, &k);
    let peers = [Peer {
        id: "target".into(),
        addr: proxy,
    }];
    let n = negotiate(
        &source,
        offer(1, "vm1", 4.0),
        &peers,
        Duration::from_secs(60),
        TIMEOUT,
    )
    .await;
    assert!(n.grant.is_none(), "{n:?}");
    assert_eq!(n.refusals.len(), 1, "{n:?}");
    // The target had granted it, and freed it again on the source's word, not 60 s later.
    let ledger = target.ledger.lock().unwrap();
    assert!(ledger.reservations(Instant::now()).is_empty());
}

#[tokio::test]
async fn a_renewed_lease_holds_the_room_past_its_first_term_and_only_for_its_source() {
    let k = key(7);
    let target = host("target", 4.0, &k);
    let (addr, _stop) = serve(&target).await;
    let peers = [Peer {
        id: "target".into(),
        addr,
    }];
    let source = host("src", 15.0, &k);
    let n = negotiate(
        &source,
        offer(1, "vm1", 4.0),
        &peers,
        Duration::from_millis(1000),
        TIMEOUT,
    )
    .await;
    let grant = n.grant.expect("granted");
    let held = || {
        target
            .ledger
            .lock()
            .unwrap()
            .reservations(Instant::now())
            .len()
    };
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        renew(&source, &grant, TIMEOUT).await.unwrap();
    }
    assert_eq!(held(), 1, "1.5 s into a 1 s lease, renewed");
    // Another host cannot renew it.
    let other = host("other", 15.0, &k);
    let err = renew(&other, &grant, TIMEOUT).await.unwrap_err();
    assert!(err.contains("belongs to src"), "{err}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(held(), 0, "no renewal, and the lease ran out");
    assert!(renew(&source, &grant, TIMEOUT).await.is_err());
}

#[tokio::test]
async fn a_stranger_holding_idle_connections_does_not_keep_peers_out() {
    let k = key(7);
    let target = host("target", 4.0, &k);
    let (addr, _stop) = serve(&target).await;
    // 70 connections from another address that never send a byte: more than the host serves
    // at once.
    let mut idle = Vec::new();
    for _ in 0..70 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        if let Ok(conn) = socket.connect(addr).await {
            idle.push(conn);
        }
    }
    let source = host("src", 15.0, &k);
    let peers = [Peer {
        id: "target".into(),
        addr,
    }];
    let started = Instant::now();
    let n = negotiate(
        &source,
        offer(1, "vm1", 4.0),
        &peers,
        Duration::from_secs(30),
        TIMEOUT,
    )
    .await;
    assert!(n.grant.is_some(), "{n:?}");
    assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
    drop(idle);
}
