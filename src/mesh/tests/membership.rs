//! SWIM membership over authenticated datagrams on loopback: members found through a seed,
//! a member with the wrong key never admitted, a stopped member declared down.

use augur_mesh::membership::{run, MemberId, Members};
use augur_mesh::MeshKey;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::watch;

struct Running {
    id: MemberId,
    members: Arc<Members>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(host: &str, key: u8, seeds: Vec<SocketAddr>) -> Running {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let id = MemberId {
        host: host.into(),
        gossip: addr,
        mesh: addr,
        generation: 0,
    };
    let members = Arc::new(Members::default());
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(run(
        id.clone(),
        MeshKey::from_bytes(&[key; 32]).unwrap(),
        socket,
        seeds,
        members.clone(),
        rx,
    ));
    Running {
        id,
        members,
        stop,
        task,
    }
}

fn names(r: &Running) -> Vec<String> {
    let mut n: Vec<String> = r.members.live().into_iter().map(|m| m.host).collect();
    n.sort();
    n
}

async fn until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_meet_through_a_seed_strangers_stay_out_and_the_dead_go_down() {
    let b = start("b", 7, vec![]).await;
    let a = start("a", 7, vec![b.id.gossip]).await;
    let c = start("c", 7, vec![b.id.gossip]).await;
    let stranger = start("stranger", 9, vec![b.id.gossip, a.id.gossip]).await;
    let started = Instant::now();
    until("everyone to know everyone", Duration::from_secs(20), || {
        names(&a) == ["b", "c"] && names(&b) == ["a", "c"] && names(&c) == ["a", "b"]
    })
    .await;
    println!("three members converged in {:?}", started.elapsed());
    // The members may meet before the stranger's first datagram lands: wait for its refusal.
    until("b to refuse the stranger", Duration::from_secs(20), || {
        b.members.refused.load(Ordering::Relaxed) > 0
    })
    .await;
    assert!(names(&stranger).is_empty(), "the stranger met nobody");
    // c stops (leaves); a and b notice.
    let _ = c.stop.send(true);
    let stopped = Instant::now();
    until("c to be gone", Duration::from_secs(30), || {
        names(&a) == ["b"] && names(&b) == ["a"]
    })
    .await;
    println!("a member that left was dropped in {:?}", stopped.elapsed());
    // d crashes: no goodbye. Failure detection has to find out.
    let d = start("d", 7, vec![b.id.gossip]).await;
    until("d to join", Duration::from_secs(20), || {
        names(&a) == ["b", "d"]
    })
    .await;
    d.task.abort();
    let crashed = Instant::now();
    until("d to be declared down", Duration::from_secs(60), || {
        names(&a) == ["b"] && names(&b) == ["a"]
    })
    .await;
    println!(
        "a crashed member was declared down in {:?}",
        crashed.elapsed()
    );
    drop((a.stop, b.stop, stranger.stop));
}
