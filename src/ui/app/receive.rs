//! The app's side of the worker's replies: each goes to the pane that
//! asked (stale ones, for another layer or offset, are dropped there), and
//! a request that failed is said in the pane that made it.
use super::App;
use crate::ui::action::Pane;
use crate::ui::context::{requests, Effect, Effects, FsState, Highlight, OpenState};
use crate::ui::msg::{FsView, Reply, Request};
use crate::ui::panes::hex::HexPane;

impl App {
    pub(super) fn receive_inner(&mut self, reply: Reply) -> Effects {
        let s = &self.shared;
        match reply {
            Reply::Opened(info) => {
                tracing::info!(image = %info.title, size = info.disk_size, layers = info.layers.len(), "chain open");
                self.opened(*info);
                return requests(self.refresh());
            }
            Reply::OpenFailed(e) => {
                self.shared.open = OpenState::Failed(e.clone());
                return vec![Effect::Error(e)];
            }
            Reply::Hex(h) => self.hex.receive(h, s),
            Reply::Grid(g) => {
                if let Some(sv) = g.server {
                    self.status.server = Some(sv);
                    self.shared.server_layers = Some(sv.layers);
                }
                self.hitmap.receive(g, &self.shared)
            }
            Reply::Nbd(n) => self.status.nbd = Some(n),
            Reply::Ssh(n) => self.status.ssh = Some(n),
            Reply::Volumes(list) => {
                let rows = list.as_ref().map_or(1, |l| l.rows.len().max(1));
                self.shared.volume_rows = u16::try_from(rows).unwrap_or(u16::MAX);
                self.volumes.list = Some(list);
            }
            Reply::Fs { as_of, fields } if as_of == s.as_of => return self.receive_fs(fields),
            Reply::Dir {
                as_of,
                ino,
                entries,
            } if as_of == s.as_of => {
                let changes = self.changes.rows_for(s.as_of);
                return self.tree.receive_dir(ino, entries, changes, s);
            }
            Reply::FileAt(f) if f.as_of == s.as_of => return self.tree.receive_file(*f),
            Reply::Marks { as_of, marks } if as_of == s.as_of => self.tree.receive_marks(marks),
            Reply::Found(f) => return self.tree.receive_found(*f, s),
            Reply::Structure(st) if st.as_of == s.as_of => {
                let mut fx = Vec::new();
                if st.focus {
                    fx.push(Effect::Focus(Pane::Hex));
                }
                fx.push(Effect::HexStale);
                self.hex.offset = (st.at & !15).min(HexPane::max_offset(s));
                let h = Highlight {
                    label: st.label,
                    fields: st.fields,
                    selected: None,
                };
                match self.hex.show_highlight(h, s) {
                    Some(r) => fx.push(Effect::Request(r)),
                    None => fx.push(Effect::Request(self.hex.request(s))),
                }
                return fx;
            }
            Reply::Groups { as_of, table } if as_of == s.as_of => {
                return self.groups.receive_table(table)
            }
            Reply::GroupFields {
                as_of,
                group,
                fields,
            } if as_of == s.as_of => return self.groups.receive_fields(group, fields),
            r @ (Reply::DiffProgress { .. } | Reply::Diff { .. } | Reply::Compare(_)) => {
                return self.receive_diff(r)
            }
            Reply::Error(e) => return vec![Effect::Error(e)],
            Reply::Failed { request, error } => return self.failed(*request, error),
            _ => {}
        }
        Vec::new()
    }

    /// A request the worker could not serve: the pane that asked says so
    /// (rather than showing what it had before), and the bar too.
    fn failed(&mut self, request: Request, error: String) -> Effects {
        let s = &self.shared;
        match request {
            Request::Hex { as_of, offset, .. } if as_of == s.as_of => {
                self.hex.failed = Some((offset, error.clone()));
            }
            Request::Grid { as_of, .. } if as_of == s.as_of => {
                self.hitmap.failed = Some(error.clone());
            }
            Request::Dir { as_of, .. } if as_of == s.as_of => {
                self.tree.error = Some(error.clone());
                self.tree.reveal = None;
                self.tree.restore = None;
            }
            _ => {}
        }
        vec![Effect::Error(error)]
    }

    /// The diff's replies; when its result is in, the tree shows the
    /// names it deleted.
    fn receive_diff(&mut self, r: Reply) -> Effects {
        let (done, fx) = self.changes.receive(r, &self.shared);
        if done {
            let rows = self.changes.rows_for(self.shared.as_of);
            self.tree.add_deleted_rows(rows.unwrap_or_default());
        }
        fx
    }

    /// The superblock's fields (or why there is no filesystem): the tree
    /// starts at the root.
    fn receive_fs(&mut self, fs: Result<FsView, String>) -> Effects {
        let s = &mut self.shared;
        match fs {
            Ok(v) => {
                s.block_size = Some(v.block_size).filter(|&b| b > 0);
                s.fs = FsState::Present;
                s.fs_kind = v.kind;
                s.fs_root = v.root;
                s.volume = v.volume;
                self.superblock.fields = Some(Ok(v.fields));
                // Replayed blocks show in the hit map once the filesystem
                // is open: ask for it again.
                let replayed = v.journal.as_ref().is_some_and(|j| j.replayed);
                s.journal_note = v.journal.is_some();
                self.status.journal = v.journal.clone();
                self.superblock.journal = v.journal;
                let mut fx = self.tree.reset_root(&self.shared);
                if replayed {
                    fx.extend(requests(self.hitmap.request(&self.shared)));
                }
                return fx;
            }
            Err(e) => {
                s.journal_note = false;
                self.status.journal = None;
                self.superblock.journal = None;
                s.block_size = None;
                s.fs = FsState::Missing(e.clone());
                s.fs_kind = "";
                self.superblock.fields = Some(Err(e));
            }
        }
        self.tree.reset_root(&self.shared)
    }
}
