//! Generated change sets: random but reproducible (seeded) shell commands
//! over a model of the tree, so that every command is valid when the
//! guest runs it: new files and trees, writes and appends, files replaced
//! by a rename over them, moves of files and directories (into new and
//! old directories, deep ones included), deletions of files and trees,
//! hard and symbolic links, mode changes, and files created then deleted.
use std::collections::BTreeSet;
use std::path::Path;

pub use crate::util::Rng;

/// Picks a member of a set (the generator's choice among paths).
trait Pick {
    fn pick<'a>(&mut self, set: &'a BTreeSet<String>) -> Option<&'a String>;
}

impl Pick for Rng {
    fn pick<'a>(&mut self, set: &'a BTreeSet<String>) -> Option<&'a String> {
        if set.is_empty() {
            return None;
        }
        let i = self.below(set.len());
        set.iter().nth(i)
    }
}

/// The tree as the commands leave it (paths from the mount point).
pub struct Model {
    pub dirs: BTreeSet<String>,
    pub files: BTreeSet<String>,
    /// Symbolic links (never written through: their targets may go).
    pub links: BTreeSet<String>,
    counter: usize,
}

impl Model {
    /// A base tree on the host (for mke2fs -d) and its model.
    pub fn base(root: &Path, rng: &mut Rng) -> Model {
        let mut m = Model {
            dirs: BTreeSet::from(["".to_owned()]),
            files: BTreeSet::new(),
            links: BTreeSet::new(),
            counter: 0,
        };
        for _ in 0..12 {
            let parent = rng.pick(&m.dirs).unwrap().clone();
            let d = format!("{parent}/d{}", m.fresh());
            std::fs::create_dir_all(root.join(d.trim_start_matches('/'))).unwrap();
            m.dirs.insert(d);
        }
        for _ in 0..30 {
            let parent = rng.pick(&m.dirs).unwrap().clone();
            let f = format!("{parent}/f{}.conf", m.fresh());
            let size = 1 + rng.below(20_000);
            let body: Vec<u8> = (0..size).map(|j| ((j * 7 + size) % 251) as u8).collect();
            std::fs::write(root.join(f.trim_start_matches('/')), body).unwrap();
            m.files.insert(f);
        }
        m
    }

    fn fresh(&mut self) -> usize {
        self.counter += 1;
        self.counter
    }

    /// A directory that is not `d` nor under it.
    fn dir_outside(&self, rng: &mut Rng, d: &str) -> Option<String> {
        let outside: BTreeSet<String> = self
            .dirs
            .iter()
            .filter(|x| *x != d && !x.starts_with(&format!("{d}/")))
            .cloned()
            .collect();
        rng.pick(&outside).cloned()
    }

    fn remove_tree(&mut self, d: &str) {
        let under = format!("{d}/");
        self.dirs.retain(|x| x != d && !x.starts_with(&under));
        self.files.retain(|x| !x.starts_with(&under));
        self.links.retain(|x| !x.starts_with(&under));
    }

    fn move_tree(&mut self, from: &str, to: &str) {
        let under = format!("{from}/");
        let re = |x: &String| -> String {
            if x == from {
                to.to_owned()
            } else if let Some(rest) = x.strip_prefix(&under) {
                format!("{to}/{rest}")
            } else {
                x.clone()
            }
        };
        self.dirs = self.dirs.iter().map(re).collect();
        self.files = self.files.iter().map(re).collect();
        self.links = self.links.iter().map(re).collect();
    }

    /// `n` commands over `$G`, the mount point.
    pub fn commands(&mut self, rng: &mut Rng, n: usize) -> String {
        let mut out = String::new();
        let mut done = 0;
        while done < n {
            let k = self.fresh();
            let line = match rng.below(13) {
                0 => {
                    // A new tree, two deep.
                    let parent = rng.pick(&self.dirs).unwrap().clone();
                    let a = format!("{parent}/n{k}");
                    let b = format!("{a}/m{k}");
                    let f = format!("{b}/leaf{k}.conf");
                    self.dirs.insert(a);
                    self.dirs.insert(b.clone());
                    self.files.insert(f.clone());
                    format!("mkdir -p \"$G{b}\"; echo leaf{k} > \"$G{f}\"")
                }
                1 | 2 => {
                    let parent = rng.pick(&self.dirs).unwrap().clone();
                    let f = format!("{parent}/new{k}.conf");
                    self.files.insert(f.clone());
                    format!("echo new{k} > \"$G{f}\"")
                }
                3 | 4 => {
                    // Replaced: written beside it, renamed over it.
                    let Some(f) = rng.pick(&self.files).cloned() else {
                        continue;
                    };
                    format!("echo v{k} > \"$G{f}.tmp\"; mv \"$G{f}.tmp\" \"$G{f}\"")
                }
                5 => {
                    let Some(f) = rng.pick(&self.files).cloned() else {
                        continue;
                    };
                    format!("echo more{k} >> \"$G{f}\"")
                }
                6 => {
                    let Some(f) = rng.pick(&self.files).cloned() else {
                        continue;
                    };
                    self.files.remove(&f);
                    format!("rm \"$G{f}\"")
                }
                7 => {
                    let Some(d) = rng.pick(&self.dirs).cloned().filter(|d| !d.is_empty()) else {
                        continue;
                    };
                    self.remove_tree(&d);
                    format!("rm -rf \"$G{d}\"")
                }
                8 => {
                    // A file moved, into some directory.
                    let Some(f) = rng.pick(&self.files).cloned() else {
                        continue;
                    };
                    let to_dir = rng.pick(&self.dirs).unwrap().clone();
                    let to = format!("{to_dir}/moved{k}.conf");
                    self.files.remove(&f);
                    self.files.insert(to.clone());
                    format!("mv \"$G{f}\" \"$G{to}\"")
                }
                9 => {
                    // A directory moved, maybe into a new one.
                    let Some(d) = rng.pick(&self.dirs).cloned().filter(|d| !d.is_empty()) else {
                        continue;
                    };
                    let Some(target) = self.dir_outside(rng, &d) else {
                        continue;
                    };
                    let fresh_parent = rng.below(2) == 0;
                    let parent = if fresh_parent {
                        format!("{target}/p{k}")
                    } else {
                        target
                    };
                    let to = format!("{parent}/r{k}");
                    self.move_tree(&d, &to);
                    let mut line = String::new();
                    if fresh_parent {
                        self.dirs.insert(parent.clone());
                        line += &format!("mkdir \"$G{parent}\"; ");
                    }
                    line + &format!("mv \"$G{d}\" \"$G{to}\"")
                }
                10 => {
                    let Some(f) = rng.pick(&self.files).cloned() else {
                        continue;
                    };
                    let to = format!("{f}.link{k}");
                    if rng.below(2) == 0 {
                        self.files.insert(to.clone());
                        format!("ln \"$G{f}\" \"$G{to}\"")
                    } else {
                        self.links.insert(to.clone());
                        format!("ln -s \"{f}\" \"$G{to}\"")
                    }
                }
                11 => {
                    let Some(f) = rng.pick(&self.files).cloned() else {
                        continue;
                    };
                    let mode = ["600", "640", "755", "444"][rng.below(4)];
                    format!("chmod {mode} \"$G{f}\"")
                }
                _ => {
                    let parent = rng.pick(&self.dirs).unwrap().clone();
                    format!("echo gone > \"$G{parent}/tmp{k}\"; rm \"$G{parent}/tmp{k}\"")
                }
            };
            out += &line;
            out.push('\n');
            done += 1;
        }
        out
    }
}
