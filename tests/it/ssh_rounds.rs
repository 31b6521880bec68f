//! Round trips of an `ssh://` chain's open: the backing file an overlay
//! names is opened while the overlay's tables load, not after. Oracles:
//! the session's round-trip count (requests that had to wait for earlier
//! replies start a round) and the local chain's bytes.
use layerscope::block::chain::{open_chain, ChainOptions, FsOpener};
use layerscope::block::layered::LayeredReader;
use layerscope::block::ssh::{self, Options};
use layerscope::block::BlockSource;

use crate::ssh::{fixture, Sshd};

#[test]
fn an_ssh_chain_opens_each_backing_file_while_its_overlay_loads() {
    let Some(dir) = fixture() else { return };
    let Some(sshd) = Sshd::start() else { return };
    let top = dir.join("top/top.qcow2");
    let opts = Options {
        ssh_command: Some(sshd.command.clone()),
        ..Options::default()
    };
    let chain = ssh::open_ssh_chain(&sshd.uri(&top), ChainOptions::default(), opts).unwrap();
    let session = ssh::session_of(&chain).unwrap();
    let rounds = session.round_trips();
    // ssh's start; the top's open and its format probe; then the tables
    // of each qcow2 layer (top, mid) go with the open of the layer below,
    // whose probe follows: 1 + 2 + 2 + 2. One after another, each open
    // would be a round of its own (9).
    assert_eq!(chain.layers.len(), 3);
    assert!(rounds <= 7, "{rounds} round trips to open the chain");
    let local = open_chain(top.to_str().unwrap(), ChainOptions::default(), &FsOpener).unwrap();
    let (r, l) = (
        LayeredReader::new(&chain).unwrap(),
        LayeredReader::new(&local).unwrap(),
    );
    assert_eq!(r.len(), l.len());
    let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0;
    while at < l.len() {
        let n = (l.len() - at).min(1 << 20) as usize;
        r.read_at(at, &mut a[..n]).unwrap();
        l.read_at(at, &mut b[..n]).unwrap();
        assert!(a[..n] == b[..n], "bytes differ at {at:#x}");
        at += n as u64;
    }
}
