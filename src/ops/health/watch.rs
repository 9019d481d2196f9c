//! `health --watch` on a terminal: one screen redrawn in place (ratatui on crossterm, in the
//! alternate screen), with each check's latency over the last minute as a sparkline, when
//! its state last changed, and a one-line summary. `q`, Ctrl-C (a key in raw mode), SIGTERM
//! and SIGHUP end it; the terminal is given back as it was in every case, because the
//! [`Screen`] guard restores it on drop (the signals end the command by dropping its future).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io::Stdout;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use crossterm::event::{Event, EventStream, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::{cursor, execute, terminal};
use futures::StreamExt;
use ratatui::backend::CrosstermBackend;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row as TableRow, Table};
use ratatui::{Frame, Terminal};

use crate::checks::{verdict, Row};
use crate::error::Exit;

/// How far back the sparkline reaches.
const WINDOW: Duration = Duration::from_secs(60);
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
/// A failed round in the sparkline.
const FAILED: char = '×';

/// What the screen shows, kept between rounds.
#[derive(Debug)]
pub struct Board {
    pub title: String,
    pub interval: Duration,
    pub rounds: u64,
    pub last_round: Option<SystemTime>,
    pub tracks: BTreeMap<String, Track>,
    /// The rows of the last round, in their order.
    pub rows: Vec<Row>,
}

/// One check's history.
#[derive(Debug, Default)]
pub struct Track {
    /// (when, latency, ok) of each round within [`WINDOW`].
    pub samples: VecDeque<(Instant, u64, bool)>,
    pub ok: bool,
    /// When the state last changed (first seen, before any change).
    pub since: Option<SystemTime>,
}

impl Board {
    pub fn new(title: String, interval: Duration) -> Board {
        Board {
            title,
            interval,
            rounds: 0,
            last_round: None,
            tracks: BTreeMap::new(),
            rows: Vec::new(),
        }
    }

    /// Takes in a round's rows.
    pub fn record(&mut self, rows: Vec<Row>, at: Instant, wall: SystemTime) {
        for row in &rows {
            let track = self.tracks.entry(row.name.clone()).or_default();
            if track.since.is_none() || track.ok != row.ok {
                track.since = Some(wall);
            }
            track.ok = row.ok;
            track.samples.push_back((at, row.latency_ms, row.ok));
            while track
                .samples
                .front()
                .is_some_and(|(t, _, _)| at.duration_since(*t) > WINDOW)
            {
                track.samples.pop_front();
            }
        }
        self.rounds += 1;
        self.last_round = Some(wall);
        self.rows = rows;
    }

    /// "up: 10 checks" / "degraded: 1 of 10 checks failing: closed" / "api down: ...".
    pub fn summary(&self) -> String {
        if self.rows.is_empty() {
            return "first round running…".to_string();
        }
        let failing: Vec<&str> = self
            .rows
            .iter()
            .filter(|r| !r.ok)
            .map(|r| r.name.as_str())
            .collect();
        let total = self.rows.len();
        match verdict(&self.rows) {
            Exit::Ok => format!("up: all {total} checks pass"),
            exit => format!(
                "{}: {} of {total} checks failing: {}",
                if exit == Exit::Failed {
                    "api down"
                } else {
                    "degraded"
                },
                failing.len(),
                failing.join(", ")
            ),
        }
    }
}

/// The last samples as bars scaled to the largest, a failed round as `×`.
pub fn sparkline(samples: &VecDeque<(Instant, u64, bool)>, width: usize) -> String {
    let skip = samples.len().saturating_sub(width);
    let shown: Vec<_> = samples.iter().skip(skip).collect();
    let max = shown.iter().map(|(_, ms, _)| *ms).max().unwrap_or(1).max(1);
    shown
        .iter()
        .map(|(_, ms, ok)| {
            if *ok {
                BARS[((ms * 7) / max) as usize]
            } else {
                FAILED
            }
        })
        .collect()
}

/// `HH:MM:SS` (UTC) of a wall-clock time.
fn clock(at: SystemTime) -> String {
    let text = humantime::format_rfc3339_seconds(at).to_string();
    text.get(11..19).unwrap_or(&text).to_string()
}

/// Draws the whole screen: a title line, the table, the summary on the last line.
pub fn draw(frame: &mut Frame, board: &Board) {
    let [title, table, summary] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let round = match board.last_round {
        Some(at) => format!("round {} at {}Z", board.rounds, clock(at)),
        None => "connecting".to_string(),
    };
    let heading = format!(
        "{} · every {} · {round} · q or Ctrl-C quits",
        board.title,
        humantime::format_duration(board.interval)
    );
    frame.render_widget(
        Paragraph::new(Line::from(heading)).style(Style::new().add_modifier(Modifier::BOLD)),
        title,
    );
    frame.render_widget(checks_table(board, table), table);
    let style = match board.rows.is_empty() {
        true => Style::new(),
        false => match verdict(&board.rows) {
            Exit::Ok => Style::new().fg(Color::Green),
            _ => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        },
    };
    frame.render_widget(Paragraph::new(board.summary()).style(style), summary);
}

fn checks_table(board: &Board, area: Rect) -> Table<'static> {
    // The sparkline gets what the fixed columns and a usable DETAIL leave, up to a minute
    // of one-second rounds.
    let spark_width = (area.width as usize).saturating_sub(16 + 6 + 9 + 10 + 5 + 50);
    let spark_width = spark_width.clamp(10, 60);
    let rows = board.rows.iter().map(|row| {
        let track = board.tracks.get(&row.name);
        let (status, style) = if row.ok {
            ("ok", Style::new().fg(Color::Green))
        } else {
            (
                "FAIL",
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            )
        };
        TableRow::new(vec![
            Cell::from(row.name.clone()),
            Cell::from(status).style(style),
            Cell::from(format!("{} ms", row.latency_ms)),
            Cell::from(
                track
                    .map(|t| sparkline(&t.samples, spark_width))
                    .unwrap_or_default(),
            ),
            Cell::from(track.and_then(|t| t.since).map(clock).unwrap_or_default()),
            Cell::from(row.detail.clone()),
        ])
    });
    let header = TableRow::new(vec![
        "CHECK",
        "STATUS",
        "LATENCY",
        "LAST MINUTE",
        "SINCE",
        "DETAIL",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    Table::new(
        rows,
        [
            Constraint::Length(16),
            Constraint::Length(6),
            Constraint::Length(9),
            Constraint::Length(spark_width as u16),
            Constraint::Length(10),
            Constraint::Min(10),
        ],
    )
    .header(header)
}

/// The terminal in raw mode on the alternate screen, given back on drop.
struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    fn enter() -> std::io::Result<Screen> {
        terminal::enable_raw_mode()?;
        let mut stdout = std::io::stdout();
        if let Err(e) = execute!(stdout, terminal::EnterAlternateScreen, cursor::Hide) {
            let _ = terminal::disable_raw_mode();
            return Err(e);
        }
        let terminal = Terminal::new(CrosstermBackend::new(stdout))?;
        Ok(Screen { terminal })
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(
            self.terminal.backend_mut(),
            cursor::Show,
            terminal::LeaveAlternateScreen
        );
        let _ = terminal::disable_raw_mode();
    }
}

/// What the keyboard asked for.
enum Key {
    Quit,
    Redraw,
    Other,
}

fn key_of(event: Option<std::io::Result<Event>>) -> Key {
    match event {
        // The terminal is gone: nothing left to show.
        None | Some(Err(_)) => Key::Quit,
        Some(Ok(Event::Key(key))) if key.kind != KeyEventKind::Release => {
            let ctrl_c = key.modifiers.contains(KeyModifiers::CONTROL)
                && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('d'));
            if ctrl_c || matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) {
                Key::Quit
            } else {
                Key::Other
            }
        }
        Some(Ok(Event::Resize(..))) => Key::Redraw,
        Some(Ok(_)) => Key::Other,
    }
}

/// Runs rounds every `interval` and redraws after each, until a quitting key.
pub async fn run<F, Fut>(title: String, interval: Duration, mut round: F) -> Result<Exit>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Vec<Row>>>,
{
    let mut screen = Screen::enter()?;
    let mut keys = EventStream::new();
    let mut board = Board::new(title, interval);
    screen.terminal.draw(|f| draw(f, &board))?;
    loop {
        let next = tokio::time::Instant::now() + interval;
        let rows = {
            let work = round();
            tokio::pin!(work);
            loop {
                tokio::select! {
                    rows = &mut work => break rows?,
                    key = keys.next() => match key_of(key) {
                        Key::Quit => return Ok(Exit::Ok),
                        Key::Redraw => { screen.terminal.draw(|f| draw(f, &board))?; }
                        Key::Other => {}
                    },
                }
            }
        };
        board.record(rows, Instant::now(), SystemTime::now());
        screen.terminal.draw(|f| draw(f, &board))?;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => break,
                key = keys.next() => match key_of(key) {
                    Key::Quit => return Ok(Exit::Ok),
                    Key::Redraw => { screen.terminal.draw(|f| draw(f, &board))?; }
                    Key::Other => {}
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;

    fn row(name: &str, ok: bool, latency_ms: u64) -> Row {
        Row {
            name: name.into(),
            ok,
            latency_ms,
            detail: format!("{name} detail"),
        }
    }

    #[test]
    fn the_sparkline_scales_to_the_largest_and_marks_failures() {
        let now = Instant::now();
        let samples: VecDeque<_> = [(now, 10, true), (now, 80, true), (now, 40, false)].into();
        assert_eq!(sparkline(&samples, 10), "▁█×");
        assert_eq!(sparkline(&samples, 2), "█×");
    }

    #[test]
    fn a_change_of_state_moves_since_and_old_samples_leave_the_window() {
        let mut board = Board::new("t".into(), Duration::from_secs(1));
        let t0 = Instant::now();
        let w0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        board.record(vec![row("redis", true, 5)], t0, w0);
        let w1 = w0 + Duration::from_secs(30);
        board.record(
            vec![row("redis", true, 6)],
            t0 + Duration::from_secs(30),
            w1,
        );
        assert_eq!(board.tracks["redis"].since, Some(w0));
        let w2 = w0 + Duration::from_secs(90);
        board.record(
            vec![row("redis", false, 7)],
            t0 + Duration::from_secs(90),
            w2,
        );
        let track = &board.tracks["redis"];
        assert_eq!(track.since, Some(w2));
        assert_eq!(
            track.samples.len(),
            2,
            "the first sample is over a minute old"
        );
        assert_eq!(board.summary(), "degraded: 1 of 1 checks failing: redis");
    }

    #[test]
    fn the_screen_has_a_title_the_table_and_the_summary_on_the_last_line() {
        let mut board = Board::new("health of sandbox".into(), Duration::from_secs(1));
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(3600 + 120 + 3);
        board.record(
            vec![row("api", true, 40), row("redis", true, 3)],
            Instant::now(),
            wall,
        );
        let mut terminal = Terminal::new(TestBackend::new(120, 8)).unwrap();
        terminal.draw(|f| draw(f, &board)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        let lines: Vec<String> = (0..8)
            .map(|y| {
                (0..120)
                    .map(|x| buffer[(x, y)].symbol().to_string())
                    .collect()
            })
            .collect();
        assert!(
            lines[0].starts_with("health of sandbox · every 1s · round 1 at 01:02:03Z"),
            "{lines:#?}"
        );
        assert!(
            lines[1].starts_with("CHECK") && lines[1].contains("LAST MINUTE"),
            "{lines:#?}"
        );
        assert!(
            lines[2].starts_with("api ") && lines[2].contains("40 ms"),
            "{lines:#?}"
        );
        assert!(
            lines[3].starts_with("redis ") && lines[3].contains("01:02:03"),
            "{lines:#?}"
        );
        assert!(lines[7].starts_with("up: all 2 checks pass"), "{lines:#?}");
    }
}
