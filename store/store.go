// Package store keeps trainyard's state (identities, resources, clusters, actions) in SQL.
//
// It promises: every write runs in one transaction that commits whole or not at all; a write
// that joins an outer transaction (see Write) commits with it; a cluster has at most one
// node-changing action that is queued or running, enforced by a unique index as well as by the
// compare-and-swap in AcquireClusterSlot; ids are never reused.
//
// The SQL is the subset that SQLite and PostgreSQL share, written with ? placeholders that the
// PostgreSQL dialect rebinds. SQLite (modernc.org/sqlite, pure Go) is the embedded default;
// PostgreSQL (pgx) serves several replicas: its writes run SERIALIZABLE and are retried when
// PostgreSQL reports a serialization failure.
package store

import (
	"context"
	"database/sql"
	_ "embed"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/trainyard/trainyard"
	_ "modernc.org/sqlite"
)

//go:embed schema.sql
var schemaV1 string

//go:embed schema_v2.sql
var schemaV2 string

//go:embed schema_v3.sql
var schemaV3 string

// DB is an open store.
type DB struct {
	db       *sql.DB // writes (and reads inside a write)
	read     *sql.DB // reads: on SQLite they never take the write lock, so they do not queue behind writes
	postgres bool
}

// Tx is a transaction of the store; its methods are the store's operations.
type Tx struct {
	tx       *sql.Tx
	now      time.Time
	postgres bool
}

// Open opens the store that dsn names: a postgres:// or postgresql:// URL, or else a directory
// for SQLite.
func Open(dsn string) (*DB, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		return OpenPostgres(dsn)
	}
	return OpenSQLite(dsn)
}

// OpenPostgres opens a PostgreSQL store and migrates it (one replica at a time).
func OpenPostgres(url string) (*DB, error) {
	sqldb, err := sql.Open("pgx", url)
	if err != nil {
		return nil, err
	}
	sqldb.SetMaxOpenConns(16)
	db := &DB{db: sqldb, read: sqldb, postgres: true}
	if err := db.migrate(context.Background()); err != nil {
		sqldb.Close()
		return nil, fmt.Errorf("store: migrate: %w", err)
	}
	return db, nil
}

// Postgres reports whether the store is PostgreSQL.
func (db *DB) Postgres() bool { return db.postgres }

// Now is the time of the transaction: every timestamp a transaction writes is this one.
func (tx *Tx) Now() time.Time { return tx.now }

// OpenSQLite opens (creating if needed) the SQLite store in dir and migrates it.
func OpenSQLite(dir string) (*DB, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "trainyard.db")
	// IMMEDIATE transactions take the write lock at BEGIN, so two writers queue on the busy
	// timeout instead of failing when one upgrades a read lock. WAL lets readers (and
	// `trainyard bootstrap` run beside the server) proceed during a write.
	dsn := "file:" + path + "?_txlock=immediate&_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)" +
		"&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)"
	sqldb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db := &DB{db: sqldb}
	if err := db.migrate(context.Background()); err != nil {
		sqldb.Close()
		return nil, fmt.Errorf("store: migrate %s: %w", path, err)
	}
	readDSN := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=query_only(1)"
	if db.read, err = sql.Open("sqlite", readDSN); err != nil {
		sqldb.Close()
		return nil, err
	}
	return db, nil
}

// Close closes the store.
func (db *DB) Close() error {
	if db.read != db.db {
		db.read.Close()
	}
	return db.db.Close()
}

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error { return db.read.PingContext(ctx) }

var migrations = []string{schemaV1, schemaV2, schemaV3}

func (db *DB) migrate(ctx context.Context) error {
	idType := "INTEGER PRIMARY KEY AUTOINCREMENT"
	var opts *sql.TxOptions
	if db.postgres {
		idType = "BIGSERIAL PRIMARY KEY"
		// READ COMMITTED: after the lock below, each statement sees what the replica that held
		// it before committed (a SERIALIZABLE snapshot would predate the lock).
		opts = &sql.TxOptions{Isolation: sql.LevelReadCommitted}
	}
	sqltx, err := db.db.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	defer sqltx.Rollback()
	tx := &Tx{tx: sqltx, now: time.Now().UTC(), postgres: db.postgres}
	if db.postgres {
		// Replicas starting together migrate one at a time.
		if _, err := tx.exec(ctx, `SELECT pg_advisory_xact_lock(7201)`); err != nil {
			return err
		}
	}
	if _, err := tx.exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)`); err != nil {
		return err
	}
	for i, m := range migrations {
		version := i + 1
		var n int
		if err := tx.queryRow(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = ?`, version).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			continue
		}
		for _, stmt := range splitStatements(strings.ReplaceAll(m, "{{ID}}", idType)) {
			if _, err := tx.tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("%w in %.60q", err, stmt)
			}
		}
		if _, err := tx.exec(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, version, formatTime(tx.now)); err != nil {
			return err
		}
	}
	return sqltx.Commit()
}

// splitStatements splits a DDL script on semicolons that end a line, skipping comments.
func splitStatements(script string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(script, "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteString("\n")
		if strings.HasSuffix(t, ";") {
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	if strings.TrimSpace(cur.String()) != "" {
		out = append(out, cur.String())
	}
	return out
}

type txKey struct{}

// Write runs fn in a read-write transaction and commits when fn returns nil. When ctx already
// carries a transaction of this store (fn is called from inside another Write), fn joins it, so
// that a caller can make several operations, and the record of their answer, one atomic unit.
// On PostgreSQL the outermost Write runs fn again when the transaction could not be serialized.
func (db *DB) Write(ctx context.Context, fn func(ctx context.Context, tx *Tx) error) error {
	if tx, ok := ctx.Value(txKey{}).(*Tx); ok {
		return fn(ctx, tx)
	}
	for attempt := 1; ; attempt++ {
		err := db.write(ctx, fn)
		if !db.postgres || !retryable(err) || attempt == 10 {
			return err
		}
		time.Sleep(time.Duration(attempt*attempt) * time.Millisecond)
	}
}

func (db *DB) write(ctx context.Context, fn func(ctx context.Context, tx *Tx) error) error {
	var opts *sql.TxOptions
	if db.postgres {
		opts = &sql.TxOptions{Isolation: sql.LevelSerializable}
	}
	sqltx, err := db.db.BeginTx(ctx, opts)
	if err != nil {
		return wrapDBError(err)
	}
	tx := &Tx{tx: sqltx, now: time.Now().UTC(), postgres: db.postgres}
	ctx = context.WithValue(ctx, txKey{}, tx)
	if err := fn(ctx, tx); err != nil {
		sqltx.Rollback()
		return err
	}
	return wrapDBError(sqltx.Commit())
}

// Retryable reports whether PostgreSQL refused a transaction only because of a concurrent one;
// Write retries those, so code inside a Write must pass them through unchanged.
func Retryable(err error) bool { return retryable(err) }

func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// Read runs fn in a read-only transaction: a consistent snapshot that does not wait for writers.
// Inside a Write it joins the write, and so sees what the write changed.
func (db *DB) Read(ctx context.Context, fn func(ctx context.Context, tx *Tx) error) error {
	if tx, ok := ctx.Value(txKey{}).(*Tx); ok {
		return fn(ctx, tx)
	}
	var opts *sql.TxOptions
	if db.postgres {
		// One snapshot for every query of the read, as SQLite gives.
		opts = &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead}
	}
	sqltx, err := db.read.BeginTx(ctx, opts)
	if err != nil {
		return wrapDBError(err)
	}
	defer sqltx.Rollback()
	return fn(ctx, &Tx{tx: sqltx, now: time.Now().UTC(), postgres: db.postgres})
}

func wrapDBError(err error) error {
	if err == nil {
		return nil
	}
	var te *trainyard.Error
	if errors.As(err, &te) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if msg := err.Error(); strings.Contains(msg, "SQLITE_BUSY") || strings.Contains(msg, "database is locked") {
		return trainyard.Errorf(trainyard.EUNAVAILABLE, "the store is busy; retry the request")
	}
	if retryable(err) {
		return err // Write retries it
	}
	var pe *pgconn.PgError
	if strings.Contains(err.Error(), "UNIQUE constraint failed") || errors.As(err, &pe) && pe.Code == "23505" {
		return &trainyard.Error{Code: trainyard.ECONFLICT, Message: "the request conflicts with a concurrent change; retry it",
			Fields: map[string][]string{"store": {err.Error()}}}
	}
	return fmt.Errorf("store: %w", err)
}

const timeLayout = "2006-01-02T15:04:05.000000000Z"

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

func parseTime(s string) time.Time {
	t, err := time.Parse(timeLayout, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

func parseTimePtr(s sql.NullString) *time.Time {
	if !s.Valid {
		return nil
	}
	t := parseTime(s.String)
	return &t
}

func nullTime(t *time.Time) any {
	if t == nil {
		return nil
	}
	return formatTime(*t)
}

// rebind turns ? placeholders into PostgreSQL's $1, $2, ... (the queries have no ? elsewhere).
func (tx *Tx) rebind(q string) string {
	if !tx.postgres {
		return q
	}
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (tx *Tx) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	r, err := tx.tx.ExecContext(ctx, tx.rebind(q), args...)
	return r, wrapDBError(err)
}

func (tx *Tx) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return tx.tx.QueryContext(ctx, tx.rebind(q), args...)
}

func (tx *Tx) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	return tx.tx.QueryRowContext(ctx, tx.rebind(q), args...)
}

func (tx *Tx) insert(ctx context.Context, q string, args ...any) (int64, error) {
	var id int64
	err := tx.queryRow(ctx, q+" RETURNING id", args...).Scan(&id)
	return id, wrapDBError(err)
}

func (tx *Tx) count(ctx context.Context, q string, args ...any) (int, error) {
	var n int
	err := tx.queryRow(ctx, q, args...).Scan(&n)
	return n, wrapDBError(err)
}

// ids runs a query of one integer column.
func (tx *Tx) ids(ctx context.Context, q string, args ...any) ([]int64, error) {
	rows, err := tx.query(ctx, q, args...)
	if err != nil {
		return nil, wrapDBError(err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, wrapDBError(err)
		}
		out = append(out, id)
	}
	return out, wrapDBError(rows.Err())
}

// Page selects part of a list: page numbers start at 1.
type Page struct {
	No      int
	PerPage int
}

func (p Page) limitOffset() (int, int) {
	if p.PerPage <= 0 {
		return math.MaxInt32, 0 // all: both databases take a large LIMIT, only SQLite a negative one
	}
	no := p.No
	if no < 1 {
		no = 1
	}
	return p.PerPage, (no - 1) * p.PerPage
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
