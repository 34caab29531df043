package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"

	"github.com/trainyard/trainyard"
)

// CreateAction stores a new action with a pending step for every node of its plan; a.ID is set.
func (tx *Tx) CreateAction(ctx context.Context, a *trainyard.Action) error {
	a.CreatedAt = tx.now
	var err error
	a.ID, err = tx.insert(ctx, `INSERT INTO actions (cluster_id, account_id, type, node_changing, status, params, plan, requested_by,
	  active_iam, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		a.ClusterID, a.AccountID, a.Type, boolInt(trainyard.NodeChanging(a.Type)), a.Status, string(a.ParamsJSON()),
		string(a.PlanJSON()), a.RequestedBy.ID, a.ActiveIAM, formatTime(tx.now))
	if err != nil {
		return err
	}
	a.Steps = nil
	for b, batch := range a.Plan.Batches {
		for _, node := range batch {
			if _, err := tx.exec(ctx, `INSERT INTO action_steps (action_id, node, batch, status) VALUES (?, ?, ?, ?)`,
				a.ID, node, b, trainyard.StepPending); err != nil {
				return err
			}
			a.Steps = append(a.Steps, trainyard.Step{Node: node, Batch: b, Status: trainyard.StepPending})
		}
	}
	return tx.AddEvent(ctx, a.ID, "", "accepted "+a.Type)
}

const actionSelect = `SELECT a.id, a.cluster_id, a.account_id, a.type, a.status, a.params, a.plan, a.active_iam, a.error,
  a.outcome, a.cancel_requested, a.created_at, a.started_at, a.finished_at, u.id, u.name, u.email
  FROM actions a JOIN users u ON u.id = a.requested_by`

func scanAction(sc interface{ Scan(...any) error }) (*trainyard.Action, error) {
	var a trainyard.Action
	var params, plan, created string
	var cancel int
	var started, finished sql.NullString
	err := sc.Scan(&a.ID, &a.ClusterID, &a.AccountID, &a.Type, &a.Status, &params, &plan, &a.ActiveIAM, &a.Error,
		&a.Outcome, &cancel, &created, &started, &finished, &a.RequestedBy.ID, &a.RequestedBy.Name, &a.RequestedBy.Email)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(params), &a.Params); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(plan), &a.Plan); err != nil {
		return nil, err
	}
	a.CancelRequested = cancel == 1
	a.CreatedAt, a.StartedAt, a.FinishedAt = parseTime(created), parseTimePtr(started), parseTimePtr(finished)
	return &a, nil
}

// Action returns an action with its steps and events.
func (tx *Tx) Action(ctx context.Context, id int64) (*trainyard.Action, error) {
	a, err := scanAction(tx.queryRow(ctx, actionSelect+` WHERE a.id = ?`, id))
	if err != nil {
		return nil, wrapDBError(err)
	}
	return a, tx.loadActionDetails(ctx, a)
}

// ActionOfCluster returns an action of the cluster; ok is false when the cluster has no such action.
func (tx *Tx) ActionOfCluster(ctx context.Context, clusterID, id int64) (*trainyard.Action, bool, error) {
	a, err := scanAction(tx.queryRow(ctx, actionSelect+` WHERE a.id = ? AND a.cluster_id = ?`, id, clusterID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, wrapDBError(err)
	}
	return a, true, tx.loadActionDetails(ctx, a)
}

func (tx *Tx) loadActionDetails(ctx context.Context, a *trainyard.Action) error {
	rows, err := tx.query(ctx, `SELECT node, batch, status, error, started_at, finished_at FROM action_steps WHERE action_id = ? ORDER BY batch, node`, a.ID)
	if err != nil {
		return wrapDBError(err)
	}
	a.Steps = nil
	for rows.Next() {
		var s trainyard.Step
		var started, finished sql.NullString
		if err := rows.Scan(&s.Node, &s.Batch, &s.Status, &s.Error, &started, &finished); err != nil {
			rows.Close()
			return wrapDBError(err)
		}
		s.StartedAt, s.FinishedAt = parseTimePtr(started), parseTimePtr(finished)
		a.Steps = append(a.Steps, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return wrapDBError(err)
	}
	rows, err = tx.query(ctx, `SELECT id, at, node, message FROM action_events WHERE action_id = ? ORDER BY id`, a.ID)
	if err != nil {
		return wrapDBError(err)
	}
	defer rows.Close()
	a.Events = nil
	for rows.Next() {
		var e trainyard.Event
		var at string
		if err := rows.Scan(&e.ID, &at, &e.Node, &e.Message); err != nil {
			return wrapDBError(err)
		}
		e.Time = parseTime(at)
		a.Events = append(a.Events, e)
	}
	return wrapDBError(rows.Err())
}

// Actions lists a cluster's actions, newest first, with their steps and events.
func (tx *Tx) Actions(ctx context.Context, clusterID int64, page Page) ([]*trainyard.Action, int, error) {
	total, err := tx.count(ctx, `SELECT COUNT(*) FROM actions WHERE cluster_id = ?`, clusterID)
	if err != nil {
		return nil, 0, err
	}
	limit, offset := page.limitOffset()
	return tx.actionList(ctx, actionSelect+` WHERE a.cluster_id = ? ORDER BY a.id DESC LIMIT ? OFFSET ?`, total, clusterID, limit, offset)
}

// OpenActions returns every queued or running action, oldest first, for the reconciler; without
// steps and events, which Action loads for the one about to run.
func (tx *Tx) OpenActions(ctx context.Context) ([]*trainyard.Action, error) {
	out, _, err := tx.actionRows(ctx, actionSelect+` WHERE a.status IN (?, ?) ORDER BY a.id`, 0, trainyard.ActionQueued, trainyard.ActionRunning)
	return out, err
}

func (tx *Tx) actionList(ctx context.Context, q string, total int, args ...any) ([]*trainyard.Action, int, error) {
	out, total, err := tx.actionRows(ctx, q, total, args...)
	if err != nil {
		return nil, 0, err
	}
	for _, a := range out {
		if err := tx.loadActionDetails(ctx, a); err != nil {
			return nil, 0, err
		}
	}
	return out, total, nil
}

func (tx *Tx) actionRows(ctx context.Context, q string, total int, args ...any) ([]*trainyard.Action, int, error) {
	rows, err := tx.query(ctx, q, args...)
	if err != nil {
		return nil, 0, wrapDBError(err)
	}
	var out []*trainyard.Action
	for rows.Next() {
		a, err := scanAction(rows)
		if err != nil {
			rows.Close()
			return nil, 0, wrapDBError(err)
		}
		out = append(out, a)
	}
	rows.Close()
	return out, total, wrapDBError(rows.Err())
}

// StartAction marks a queued action running.
func (tx *Tx) StartAction(ctx context.Context, id int64) error {
	_, err := tx.exec(ctx, `UPDATE actions SET status = ?, started_at = ? WHERE id = ? AND status = ?`,
		trainyard.ActionRunning, formatTime(tx.now), id, trainyard.ActionQueued)
	return err
}

// FinishAction records an action's outcome; steps still pending or running get stepStatus.
func (tx *Tx) FinishAction(ctx context.Context, id int64, status, errMsg string) error {
	stepStatus := trainyard.StepCanceled
	if _, err := tx.exec(ctx, `UPDATE action_steps SET status = ?, finished_at = ? WHERE action_id = ? AND status IN (?, ?)`,
		stepStatus, formatTime(tx.now), id, trainyard.StepPending, trainyard.StepRunning); err != nil {
		return err
	}
	r, err := tx.exec(ctx, `UPDATE actions SET status = ?, error = ?, finished_at = ?,
	  started_at = COALESCE(started_at, ?) WHERE id = ? AND status IN (?, ?)`, status, errMsg, formatTime(tx.now), formatTime(tx.now), id,
		trainyard.ActionQueued, trainyard.ActionRunning)
	if err != nil {
		return err
	}
	// An action is finished once: a second finish (a replica that lost its lease finishing
	// late) must not apply what the end of the action entails again.
	if n, err := r.RowsAffected(); err != nil || n != 1 {
		return trainyard.Errorf(trainyard.ECONFLICT, "action %d is already finished", id)
	}
	msg := status
	if errMsg != "" {
		msg += ": " + errMsg
	}
	return tx.AddEvent(ctx, id, "", msg)
}

// DecideOutcome records how the action's work ended, before what that outcome entails is done.
func (tx *Tx) DecideOutcome(ctx context.Context, id int64, outcome, errMsg string) error {
	_, err := tx.exec(ctx, `UPDATE actions SET outcome = ?, error = ? WHERE id = ? AND outcome = ''`, outcome, errMsg, id)
	return err
}

// RequestCancel flags an action to stop at its next safe point.
func (tx *Tx) RequestCancel(ctx context.Context, id int64) error {
	_, err := tx.exec(ctx, `UPDATE actions SET cancel_requested = 1 WHERE id = ?`, id)
	return err
}

// CancelRequested reports whether someone asked to cancel the action.
func (tx *Tx) CancelRequested(ctx context.Context, id int64) (bool, error) {
	n, err := tx.count(ctx, `SELECT cancel_requested FROM actions WHERE id = ?`, id)
	return n == 1, err
}

// SetStep records a node step's status; starting a step stamps started_at, ending one finished_at.
func (tx *Tx) SetStep(ctx context.Context, actionID int64, node, status, errMsg string) error {
	var err error
	switch status {
	case trainyard.StepRunning:
		_, err = tx.exec(ctx, `UPDATE action_steps SET status = ?, error = '', started_at = COALESCE(started_at, ?) WHERE action_id = ? AND node = ?`,
			status, formatTime(tx.now), actionID, node)
	default:
		_, err = tx.exec(ctx, `UPDATE action_steps SET status = ?, error = ?, finished_at = ?, started_at = COALESCE(started_at, ?) WHERE action_id = ? AND node = ?`,
			status, errMsg, formatTime(tx.now), formatTime(tx.now), actionID, node)
	}
	return err
}

// AddEvent appends a line to an action's history.
func (tx *Tx) AddEvent(ctx context.Context, actionID int64, node, message string) error {
	_, err := tx.exec(ctx, `INSERT INTO action_events (action_id, at, node, message) VALUES (?, ?, ?, ?)`,
		actionID, formatTime(tx.now), node, message)
	return err
}

// ActionCounts counts actions by type and status, for metrics.
func (tx *Tx) ActionCounts(ctx context.Context) (map[[2]string]int, error) {
	rows, err := tx.query(ctx, `SELECT type, status, COUNT(*) FROM actions GROUP BY type, status`)
	if err != nil {
		return nil, wrapDBError(err)
	}
	defer rows.Close()
	out := map[[2]string]int{}
	for rows.Next() {
		var t, s string
		var n int
		if err := rows.Scan(&t, &s, &n); err != nil {
			return nil, wrapDBError(err)
		}
		out[[2]string{t, s}] = n
	}
	return out, wrapDBError(rows.Err())
}

// LatestAction returns the cluster's newest action, nil when it has none.
func (tx *Tx) LatestAction(ctx context.Context, clusterID int64) (*trainyard.Action, error) {
	as, _, err := tx.Actions(ctx, clusterID, Page{No: 1, PerPage: 1})
	if err != nil || len(as) == 0 {
		return nil, err
	}
	return as[0], nil
}
