//! The mesh's negotiation round trip (offer to every peer, bids, reservation granted) on
//! loopback, against the same number of plain TCP request/reply exchanges of the same size
//! without authentication, in the same run. Prints p50 and p99 of each and their ratio.
//!
//! `cargo bench -p augur-benches --bench mesh`

use augur_mesh::{negotiate, release, Demand, HorizonDemand, Ledger, MeshKey, Node, Offer, Peer};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ROUNDS: usize = 2000;
const PEERS: usize = 3;

fn demand(cpu: f64) -> Demand {
    Demand {
        cpu,
        memory_mib: cpu * 1024.0,
        disk_bps: 1e6,
        net_bps: 1e6,
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

async fn plain_echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let mut len = [0u8; 4];
                    if s.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let n = u32::from_le_bytes(len) as usize;
                    if s.read_exact(&mut buf[..n]).await.is_err() {
                        return;
                    }
                    if s.write_all(&len).await.is_err() || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn plain_exchange(addr: std::net::SocketAddr, payload: Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(&(payload.len() as u32).to_le_bytes())
        .await
        .unwrap();
    s.write_all(&payload).await.unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.unwrap();
    let mut back = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut back).await.unwrap();
}

/// The same shape without authentication or a ledger: one exchange with every peer at once (the
/// offer), then one with the first (the reservation), each on a new connection as the mesh does.
async fn plain_round(addrs: &[std::net::SocketAddr], payload: &[u8]) {
    let offers: Vec<_> = addrs
        .iter()
        .map(|a| tokio::spawn(plain_exchange(*a, payload.to_vec())))
        .collect();
    for o in offers {
        o.await.unwrap();
    }
    plain_exchange(addrs[0], payload.to_vec()).await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let key = MeshKey::from_bytes(&[3u8; 32]).unwrap();
        let mut peers = Vec::new();
        let mut nodes = Vec::new();
        for i in 0..PEERS {
            let capacity = Demand {
                disk_bps: 1e9,
                net_bps: 1e9,
                ..demand(64.0)
            };
            let mut ledger = Ledger::new(capacity, 0.8);
            ledger.set_own(forecast(8.0 + i as f64), &[]);
            let node = Node::new(format!("target{i}"), key.clone(), ledger);
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            peers.push(Peer {
                id: node.id.clone(),
                addr: listener.local_addr().unwrap(),
            });
            let (stop, rx) = tokio::sync::watch::channel(false);
            tokio::spawn(node.clone().serve(listener, rx));
            nodes.push((node, stop));
        }
        let source = Node::new("source", key.clone(), Ledger::new(demand(64.0), 0.8));
        let offer = |id: u64| Offer {
            offer_id: id,
            vm: format!("vm{id}"),
            memory_mib: 4096,
            vcpus: 4,
            forecast: forecast(2.0),
            migration_s: 3.0,
        };
        let payload = serde_json::to_vec(&offer(0)).unwrap();
        let plain: Vec<std::net::SocketAddr> = {
            let mut v = Vec::new();
            for _ in 0..PEERS {
                v.push(plain_echo_server().await);
            }
            v
        };

        let mut mesh = Vec::with_capacity(ROUNDS);
        let mut floor = Vec::with_capacity(ROUNDS);
        for round in 0..ROUNDS + 100 {
            let t = Instant::now();
            let n = negotiate(&source, offer(round as u64), &peers, Duration::from_secs(30), Duration::from_secs(5)).await;
            let took = t.elapsed();
            let Some(grant) = n.grant.clone() else {
                panic!("round {round}: no grant: {n:?}");
            };
            release(&source, &grant, Duration::from_secs(5)).await.unwrap();
            let t = Instant::now();
            plain_round(&plain, &payload).await;
            let plain_took = t.elapsed();
            if round >= 100 {
                mesh.push(took);
                floor.push(plain_took);
            }
        }
        mesh.sort();
        floor.sort();
        let (m50, m99) = (percentile(&mesh, 0.5), percentile(&mesh, 0.99));
        let (f50, f99) = (percentile(&floor, 0.5), percentile(&floor, 0.99));
        println!(
            "negotiation, offer to {PEERS} peers to reservation, {ROUNDS} rounds on loopback: p50 {:.3} ms, p99 {:.3} ms (goal: p99 under 10 ms)",
            m50.as_secs_f64() * 1e3,
            m99.as_secs_f64() * 1e3
        );
        println!(
            "plain TCP exchanges of the same shape, no authentication: p50 {:.3} ms, p99 {:.3} ms; mesh/plain: p50 {:.2}x, p99 {:.2}x",
            f50.as_secs_f64() * 1e3,
            f99.as_secs_f64() * 1e3,
            m50.as_secs_f64() / f50.as_secs_f64(),
            m99.as_secs_f64() / f99.as_secs_f64()
        );
    });
}
