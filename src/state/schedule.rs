//! The daemon's schedule state: per workflow, the newest slot dealt with
//! and the next one planned (migration 8).

use super::{bad_column, now, Store};
use crate::error::Result;
use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

/// What the daemon did with a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotAction {
    /// The workflow was started for it.
    Started,
    /// The workflow was still running from an earlier slot.
    Skipped,
    /// The slot passed while the daemon was not running and catch-up is off.
    Missed,
    /// The daemon's first start with this workflow scheduled: nothing ran,
    /// the slots before it are not owed.
    Seeded,
}

impl SlotAction {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotAction::Started => "started",
            SlotAction::Skipped => "skipped",
            SlotAction::Missed => "missed",
            SlotAction::Seeded => "seeded",
        }
    }

    fn parse(s: &str) -> Option<SlotAction> {
        [
            SlotAction::Started,
            SlotAction::Skipped,
            SlotAction::Missed,
            SlotAction::Seeded,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// One workflow's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotRecord {
    pub workflow: String,
    pub expression: String,
    /// Unix seconds.
    pub last_slot: i64,
    pub last_action: SlotAction,
    /// Unix seconds.
    pub next_slot: Option<i64>,
    pub updated_at: i64,
}

fn record(r: &Row<'_>) -> rusqlite::Result<SlotRecord> {
    let action: String = r.get(3)?;
    Ok(SlotRecord {
        workflow: r.get(0)?,
        expression: r.get(1)?,
        last_slot: r.get(2)?,
        last_action: SlotAction::parse(&action)
            .ok_or_else(|| bad_column(3, format!("unknown slot action '{action}'")))?,
        next_slot: r.get(4)?,
        updated_at: r.get(5)?,
    })
}

const COLUMNS: &str = "workflow, expression, last_slot, last_action, next_slot, updated_at";

impl Store {
    /// The schedule row of one workflow.
    pub fn schedule_slot(&self, workflow: &str) -> Result<Option<SlotRecord>> {
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM schedule WHERE workflow = ?1"
            ))?
            .query_row([workflow], record)
            .optional()
        })
    }

    /// Every schedule row, by workflow name.
    pub fn schedule_slots(&self) -> Result<Vec<SlotRecord>> {
        self.with(|c| {
            c.prepare_cached(&format!("SELECT {COLUMNS} FROM schedule ORDER BY workflow"))?
                .query_map([], record)?
                .collect()
        })
    }

    /// Record what was done with a workflow's slot and the next one planned.
    pub fn record_slot(
        &self,
        workflow: &str,
        expression: &str,
        slot: i64,
        action: SlotAction,
        next_slot: Option<i64>,
    ) -> Result<()> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO schedule (workflow, expression, last_slot, last_action, next_slot,
                                       updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (workflow) DO UPDATE SET
                   expression = excluded.expression, last_slot = excluded.last_slot,
                   last_action = excluded.last_action, next_slot = excluded.next_slot,
                   updated_at = excluded.updated_at",
            )?
            .execute(params![
                workflow,
                expression,
                slot,
                action.as_str(),
                next_slot,
                now()
            ])?;
            Ok(())
        })
    }
}
