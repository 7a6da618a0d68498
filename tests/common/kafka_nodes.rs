//! Apache Kafka brokers of a test's own (one node or a KRaft quorum), started and killed through
//! `scripts/kafka.sh`, on free loopback ports, with data in the test's directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::free_port;

/// One combined broker/controller node.
pub struct KafkaNode {
    pub node_id: u32,
    pub port: u16,
    pub controller_port: u16,
    pub dir: PathBuf,
}

/// A KRaft cluster of combined nodes; every node is a voter. Killed (SIGKILL) on drop.
pub struct KafkaCluster {
    pub nodes: Vec<KafkaNode>,
    voters: String,
    cluster_id: String,
    replication: usize,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh")
}

impl KafkaCluster {
    /// Starts `n` nodes under `dir` and waits until each answers. Topics created without an
    /// explicit factor get replication `n` and `min.insync.replicas` 2 (when n > 1).
    pub fn start(n: usize, dir: &Path) -> KafkaCluster {
        let nodes: Vec<KafkaNode> = (1..=n as u32)
            .map(|node_id| KafkaNode {
                node_id,
                port: free_port(),
                controller_port: free_port(),
                dir: dir.join(format!("kafka-{node_id}")),
            })
            .collect();
        let voters = nodes
            .iter()
            .map(|n| format!("{}@127.0.0.1:{}", n.node_id, n.controller_port))
            .collect::<Vec<_>>()
            .join(",");
        let cluster_id = uuid::Uuid::new_v4().to_string();
        let cluster = KafkaCluster {
            nodes,
            voters,
            cluster_id,
            replication: n,
        };
        // All at once: a node answers only once a quorum of controllers has elected a leader.
        let children: Vec<_> = (0..n).map(|i| cluster.spawn_start(i)).collect();
        for (i, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().expect("scripts/kafka.sh runs");
            assert!(
                out.status.success(),
                "kafka node {} did not start: {}",
                i + 1,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cluster
    }

    fn spawn_start(&self, i: usize) -> std::process::Child {
        let node = &self.nodes[i];
        let heap = if self.replication > 1 { "512m" } else { "1g" };
        Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(&node.dir)
            .args(["--node-id", &node.node_id.to_string()])
            .args(["--port", &node.port.to_string()])
            .args(["--controller-port", &node.controller_port.to_string()])
            .args(["--voters", &self.voters])
            .args(["--cluster-id", &self.cluster_id])
            .args(["--replication", &self.replication.to_string()])
            .args(["--heap", heap])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("bash runs scripts/kafka.sh")
    }

    /// `bootstrap.servers` naming every node.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// kill -9 of node index `i` (0-based).
    pub fn kill(&self, i: usize) {
        self.stop_with(i, "--kill");
    }

    /// SIGTERM (a controlled shutdown) of node index `i`.
    pub fn stop(&self, i: usize) {
        self.stop_with(i, "");
    }

    fn stop_with(&self, i: usize, flag: &str) {
        let mut cmd = Command::new("bash");
        cmd.arg(script()).arg("stop").arg(&self.nodes[i].dir);
        if !flag.is_empty() {
            cmd.arg(flag);
        }
        let out = cmd.output().expect("scripts/kafka.sh runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts node index `i` again (its data kept) without waiting for it to answer.
    pub fn spawn_restart(&self, i: usize) -> std::process::Child {
        self.spawn_start(i)
    }

    /// Starts node index `i` again (its data kept) and waits until it answers.
    pub fn restart(&self, i: usize) {
        let out = self
            .spawn_start(i)
            .wait_with_output()
            .expect("scripts/kafka.sh runs");
        assert!(
            out.status.success(),
            "kafka node {} did not restart: {}",
            i + 1,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            let _ = Command::new("bash")
                .arg(script())
                .arg("stop")
                .arg(&self.nodes[i].dir)
                .arg("--kill")
                .output();
        }
    }
}
