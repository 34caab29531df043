package store_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/trainyard/trainyard"
	"github.com/trainyard/trainyard/internal/pgtest"
	"github.com/trainyard/trainyard/store"
)

// eachStore runs test against SQLite and PostgreSQL. open opens the test's store; called again,
// it opens the same data anew (a restart).
func eachStore(t *testing.T, test func(t *testing.T, open func() *store.DB)) {
	t.Run("sqlite", func(t *testing.T) {
		dir := t.TempDir()
		test(t, func() *store.DB {
			db, err := store.OpenSQLite(dir)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		})
	})
	t.Run("postgres", func(t *testing.T) {
		url := pgtest.URL(t)
		test(t, func() *store.DB {
			db, err := store.Open(url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		})
	})
}

func seed(t *testing.T, db *store.DB) (*trainyard.Cluster, trainyard.User) {
	t.Helper()
	var c *trainyard.Cluster
	var u trainyard.User
	err := db.Write(context.Background(), func(ctx context.Context, tx *store.Tx) error {
		var err error
		if u, err = tx.CreateUser(ctx, "u", "u@example.com"); err != nil {
			return err
		}
		m, p, err := tx.CreateAccount(ctx, u, "u", "INR")
		if err != nil {
			return err
		}
		g, err := tx.CreateSecurityGroup(ctx, trainyard.SecurityGroup{AccountID: m.AccountID, ProjectID: p.ID, Location: "Delhi", Name: "g"})
		if err != nil {
			return err
		}
		c = &trainyard.Cluster{AccountID: m.AccountID, ProjectID: p.ID, Location: "Delhi", Name: "c", CreatedBy: u, SKUID: 1, PlanID: 1,
			Status: trainyard.StatusRunning, ImageVersionID: 1, Workers: 1, SecurityGroupIDs: []int64{g.ID}, NetworkGen: 1}
		return tx.CreateCluster(ctx, c)
	})
	if err != nil {
		t.Fatal(err)
	}
	return c, u
}

func TestReopenKeepsDataAndMigratesOnce(t *testing.T) { eachStore(t, testReopen) }

func testReopen(t *testing.T, open func() *store.DB) {
	db := open()
	c, _ := seed(t, db)
	db.Close()
	db = open()
	err := db.Read(context.Background(), func(ctx context.Context, tx *store.Tx) error {
		got, err := tx.Cluster(ctx, c.ID)
		if err != nil {
			return err
		}
		if got.Name != "c" || len(got.SecurityGroupIDs) != 1 {
			t.Errorf("after reopen: %+v", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOneNodeChangingActionPerCluster(t *testing.T) { eachStore(t, testOneNodeChanging) }

func testOneNodeChanging(t *testing.T, open func() *store.DB) {
	db := open()
	c, u := seed(t, db)
	// Many writers race for the slot: exactly one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := db.Write(context.Background(), func(ctx context.Context, tx *store.Tx) error {
				a := &trainyard.Action{ClusterID: c.ID, AccountID: c.AccountID, Type: trainyard.ActionRestartWorkers,
					Status: trainyard.ActionQueued, RequestedBy: u}
				if err := tx.CreateAction(ctx, a); err != nil {
					return err
				}
				ok, err := tx.AcquireClusterSlot(ctx, c.ID, a.ID, trainyard.StatusUpdating, trainyard.StatusRunning)
				if err != nil {
					return err
				}
				if !ok {
					return trainyard.Errorf(trainyard.ECONFLICT, "lost")
				}
				return nil
			})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case trainyard.ErrorCode(err) == trainyard.ECONFLICT || strings.Contains(err.Error(), "UNIQUE"):
			default:
				t.Errorf("unexpected error: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d writers won the slot", wins)
	}
	// The unique index holds even for code that skips the compare-and-swap.
	err := db.Write(context.Background(), func(ctx context.Context, tx *store.Tx) error {
		return tx.CreateAction(ctx, &trainyard.Action{ClusterID: c.ID, AccountID: c.AccountID, Type: trainyard.ActionUpdateImage,
			Status: trainyard.ActionQueued, RequestedBy: u})
	})
	if err == nil {
		t.Fatal("a second open node-changing action was stored")
	}
	// Network actions are not limited by it.
	err = db.Write(context.Background(), func(ctx context.Context, tx *store.Tx) error {
		return tx.CreateAction(ctx, &trainyard.Action{ClusterID: c.ID, AccountID: c.AccountID, Type: trainyard.ActionAttachIP,
			Status: trainyard.ActionQueued, RequestedBy: u})
	})
	if err != nil {
		t.Fatalf("network action refused: %v", err)
	}
}

func TestWriteRollsBackOnError(t *testing.T) { eachStore(t, testRollback) }

func testRollback(t *testing.T, open func() *store.DB) {
	db := open()
	err := db.Write(context.Background(), func(ctx context.Context, tx *store.Tx) error {
		if _, err := tx.CreateUser(ctx, "x", "x@example.com"); err != nil {
			return err
		}
		return trainyard.Errorf(trainyard.EINVALID, "no")
	})
	if trainyard.ErrorCode(err) != trainyard.EINVALID {
		t.Fatalf("error %v not passed through", err)
	}
	db.Read(context.Background(), func(ctx context.Context, tx *store.Tx) error {
		if _, ok, _ := tx.UserByEmail(ctx, "x@example.com"); ok {
			t.Error("the write of a failed transaction is visible")
		}
		return nil
	})
}

// Replicas starting together on one PostgreSQL migrate it once, none failing.
func TestConcurrentMigrations(t *testing.T) {
	url := pgtest.URL(t)
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			db, err := store.Open(url)
			if err == nil {
				db.Close()
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("a replica failed to open the store: %v", err)
		}
	}
}
