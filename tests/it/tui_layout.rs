//! The TUI's layouts and states as insta snapshots (each read before it
//! was accepted): the demo chain at 80x24, 120x40, 160x45 and 200x60,
//! without colour (NO_COLOR: layers by digit) and with the 16 ANSI
//! colours; a message, an error, a request pending and one failed; the
//! side-by-side view scrolled.
use layerscope::ui::app::{Action, App, Reply, Request};
use layerscope::ui::{draw_text, render_frame};

fn demo(w: u16, h: u16, keys: &str, ansi: bool) -> String {
    render_frame(layerscope::demo::open().unwrap(), w, h, keys, ansi)
}

#[test]
fn snapshot_every_pane_at_160x45_and_200x60() {
    for (w, h) in [(160, 45), (200, 60)] {
        let frame = demo(w, h, "", false);
        for pane in [
            "┌Chain",
            "┌Status",
            "┌Superblock",
            "┌Tree",
            "┌Groups",
            "┌Hex",
            "┌Hit map",
        ] {
            assert!(frame.contains(pane), "{pane} at {w}x{h}:\n{frame}");
        }
        // Data in every pane, none waiting.
        assert!(
            !frame.contains("reading") && !frame.contains("computing"),
            "{frame}"
        );
        insta::assert_snapshot!(format!("all_panes_{w}x{h}"), frame);
    }
    // The tree open with the file's layers, groups and superblock: every
    // pane busy at once.
    let frame = demo(200, 60, "2 Enter Down Down Enter 6 5 Down Down", false);
    assert!(frame.contains("▾ etc"), "{frame}");
    insta::assert_snapshot!("all_panes_busy_200x60", frame);
}

#[test]
fn snapshot_sixteen_colours_at_each_size() {
    for (w, h) in [(80, 24), (120, 40), (160, 45), (200, 60)] {
        let frame = demo(w, h, "", true);
        // Colours as SGR codes of the 16-colour palette only.
        assert!(frame.contains("\x1b[0;3"), "{frame}");
        assert!(!frame.contains("38;5;") && !frame.contains("38;2;"));
        insta::assert_snapshot!(format!("sixteen_colours_{w}x{h}"), frame);
    }
}

#[test]
fn without_colour_each_layer_has_its_digit_in_the_hit_map() {
    let frame = demo(120, 40, "", false);
    let top = frame.lines().position(|l| l.contains("┌Hit map")).unwrap();
    let grid: String = frame.lines().skip(top + 1).take(4).collect();
    for digit in ['0', '1', '2'] {
        assert!(grid.contains(digit), "layer {digit} in\n{grid}");
    }
    // With colours, blocks in each layer's colour instead.
    let ansi = demo(120, 40, "", true);
    assert!(ansi.contains('█'));
}

#[test]
fn snapshot_message_and_error_in_the_bar() {
    // A message stays (until the next key).
    let frame = demo(80, 24, "BackTab BackTab Down Enter", false);
    assert!(frame.lines().last().unwrap().contains("disk as of layer 1"));
    insta::assert_snapshot!("message_80x24", frame);
    // An error: its own mark (and, with colours, style).
    let frame = demo(80, 24, "g zz Enter", false);
    let bar = frame.lines().last().unwrap();
    assert!(
        bar.starts_with(" ✗ ") && bar.contains("not a byte count"),
        "{bar}"
    );
    insta::assert_snapshot!("error_80x24", frame);
    let ansi = demo(80, 24, "g zz Enter", true);
    let bar = ansi.lines().last().unwrap();
    assert!(bar.contains("\x1b[0;31;1;7m ✗"), "{bar:?}");
}

#[test]
fn snapshot_pending_and_failed_requests() {
    let chain = layerscope::demo::open().unwrap();
    let mut app = App::for_chain(&chain);
    // Asked for, not answered: the panes say they wait.
    let asked = app.apply(Action::Resize(120, 40));
    let frame = draw_text(&app, false);
    assert!(
        frame.contains("reading 0x0…") && frame.contains("computing…"),
        "{frame}"
    );
    insta::assert_snapshot!("pending_120x40", frame);
    // The hex read fails: the pane says so, and the bar.
    let hex = asked
        .into_iter()
        .find(|r| matches!(r, Request::Hex { .. }))
        .unwrap();
    let _ = app.receive(Reply::Failed {
        request: Box::new(hex),
        error: "top.qcow2: reading at 0x0: Input/output error".into(),
    });
    let frame = draw_text(&app, false);
    assert!(
        frame.contains("cannot read 0x0: top.qcow2: reading at 0x0: Input/output error"),
        "{frame}"
    );
    assert!(frame.lines().last().unwrap().starts_with(" ✗ "), "{frame}");
    insta::assert_snapshot!("failed_120x40", frame);
    // Moving on: the new offset is pending, the old failure not shown.
    let _ = app.apply(Action::Down);
    let frame = draw_text(&app, false);
    assert!(
        frame.contains("reading 0x10…") && !frame.contains("cannot read"),
        "{frame}"
    );
}
