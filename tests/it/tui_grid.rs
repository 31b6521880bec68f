//! The hit map's static grid without waiting for the whole map: each
//! cell probed for the topmost layer holding anything in it, then the
//! exact map walked in slices on the worker. Every grid the worker sends
//! (the probed ones, cells not probed yet "not read", and the exact one
//! with its byte counts) is checked against `qemu-img map` as of each
//! layer.
use std::path::Path;
use std::time::{Duration, Instant};

use layerscope::block::chain::{open_chain, ChainOptions, FsOpener};
use layerscope::block::layered::LayeredReader;
use layerscope::ui::msg::{CellOwner, HitMode, Reply, Request};
use layerscope::ui::worker::{spawn, Worker};

use crate::util::*;

const SIZE: u64 = 1 << 30;
const CELLS: usize = 977;

/// base.qcow2 (1 GiB) and two overlays, each with scattered writes of
/// data, of zeros (`write -z`: a zero cluster of the layer) and, in the
/// top, discards.
fn build(dir: &Path) -> Vec<String> {
    let mut rng = Rng(0x5eed_0f9a_1d00_1234);
    let names = ["base.qcow2", "mid.qcow2", "top.qcow2"];
    for (i, name) in names.iter().enumerate() {
        let mut args = vec!["qemu-img", "create", "-q", "-f", "qcow2"];
        let below;
        if i > 0 {
            below = names[i - 1].to_string();
            args.extend(["-b", &below, "-F", "qcow2"]);
        }
        if i == 2 {
            // Small clusters in the top: a map of many entries.
            args.extend(["-o", "cluster_size=4096"]);
        }
        let size = SIZE.to_string();
        args.extend([*name, &size]);
        sh(dir, &args);
        let mut cmds = Vec::new();
        if i == 2 {
            // Every other cluster of the first 64 MiB: 16k map entries,
            // more than the first grid walks.
            for n in 0..8192u64 {
                cmds.push(format!("write -z {} 4096", n * 8192));
            }
        }
        for n in 0..60 {
            let len = (1 + rng.below(64)) as u64 * 4096;
            let at = (rng.next() % (SIZE - len)) & !4095;
            cmds.push(match (i, n % 5) {
                (_, 0) => format!("write -z {at} {len}"),
                (2, 1) => format!("discard {at} {len}"),
                _ => format!("write -P {} {at} {len}", 1 + i * 60 + n % 200),
            });
        }
        let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
        qemu_io(dir, name, &cmds);
    }
    names.iter().map(|s| s.to_string()).collect()
}

/// The grid `qemu-img map` gives as of the layer `image` is (layer
/// `as_of`): each cell the topmost layer of the entries over it (none
/// present: no layer), and the bytes per layer and of no layer.
fn oracle(dir: &Path, image: &str, as_of: usize) -> (Vec<CellOwner>, Vec<u64>, u64) {
    let map = qemu_map(dir, image);
    let cell = SIZE.div_ceil(CELLS as u64);
    let mut cells = vec![CellOwner::NotRead; CELLS];
    let mut bytes = vec![0u64; as_of + 1];
    let mut nowhere = 0;
    for e in map.as_array().unwrap() {
        let (start, len) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        let owner = if e["present"].as_bool().unwrap() {
            let l = as_of - e["depth"].as_u64().unwrap() as usize;
            bytes[l] += len;
            CellOwner::Layer(l)
        } else {
            nowhere += len;
            CellOwner::Nowhere
        };
        for c in &mut cells[(start / cell) as usize..=((start + len - 1) / cell) as usize] {
            *c = match (*c, owner) {
                (CellOwner::Layer(a), CellOwner::Layer(b)) => CellOwner::Layer(a.max(b)),
                (CellOwner::Layer(a), _) => CellOwner::Layer(a),
                (_, o) => o,
            };
        }
    }
    (cells, bytes, nowhere)
}

/// The probe alone: every cell's topmost layer, as of each layer.
#[test]
fn each_cell_probed_is_what_qemu_img_map_says() {
    if !need("qemu-img") || !need("qemu-io") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let names = build(d.path());
    let top = d.path().join(&names[2]);
    let chain = open_chain(top.to_str().unwrap(), ChainOptions::default(), &FsOpener).unwrap();
    let cell = SIZE.div_ceil(CELLS as u64);
    for (as_of, name) in names.iter().enumerate() {
        let (want, ..) = oracle(d.path(), name, as_of);
        let reader = LayeredReader::new(&chain.cut(as_of)).unwrap();
        for (i, w) in want.iter().enumerate() {
            let start = i as u64 * cell;
            let len = cell.min(SIZE - start);
            let got = match reader.topmost_in(start, len).unwrap() {
                Some(l) => CellOwner::Layer(l),
                None => CellOwner::Nowhere,
            };
            assert_eq!(got, *w, "as of layer {as_of}, cell {i}");
        }
    }
}

/// Every grid the worker (on its thread, as the UI runs it) sends.
#[test]
fn every_grid_sent_agrees_with_qemu_img_map() {
    if !need("qemu-img") || !need("qemu-io") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let names = build(d.path());
    let top = d.path().join(&names[2]);
    let chain = open_chain(top.to_str().unwrap(), ChainOptions::default(), &FsOpener).unwrap();
    let (tx, rx) = spawn(Worker::new(chain));
    for (as_of, name) in names.iter().enumerate().rev() {
        let (want, bytes, nowhere) = oracle(d.path(), name, as_of);
        tx.send(Request::Grid {
            as_of,
            cells: CELLS,
            mode: HitMode::Static,
        })
        .unwrap();
        let start = Instant::now();
        let mut partial = 0;
        loop {
            let left = Duration::from_secs(60).saturating_sub(start.elapsed());
            let reply = rx.recv_timeout(left).expect("the exact grid within 60 s");
            let Reply::Grid(g) = reply else {
                panic!("as of {as_of}: {reply:?}");
            };
            assert_eq!((g.as_of, g.cells.len()), (as_of, CELLS));
            if g.exact {
                assert_eq!(g.cells, want, "as of layer {as_of}: the exact grid");
                assert_eq!(g.bytes, bytes, "as of layer {as_of}: bytes per layer");
                assert_eq!(g.nowhere, nowhere, "as of layer {as_of}: bytes of no layer");
                break;
            }
            partial += 1;
            for (i, (c, w)) in g.cells.iter().zip(&want).enumerate() {
                assert!(
                    *c == CellOwner::NotRead || c == w,
                    "as of layer {as_of}, probed grid {partial}, cell {i}: {c:?}, qemu-img map: {w:?}"
                );
            }
        }
        eprintln!("as of layer {as_of}: {partial} probed grid(s) before the exact one");
    }
}
