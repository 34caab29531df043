// Command trainyard runs the trainyard control plane (serve) and administers its accounts
// (bootstrap, iam grant). It only parses flags and wires packages together.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/trainyard/trainyard"
	"github.com/trainyard/trainyard/api"
	"github.com/trainyard/trainyard/backend/local"
	"github.com/trainyard/trainyard/backend/sim"
	"github.com/trainyard/trainyard/config"
	"github.com/trainyard/trainyard/reconcile"
	"github.com/trainyard/trainyard/service"
	"github.com/trainyard/trainyard/store"
)

const usage = `trainyard: a control plane for Slurm training clusters

Usage:
  trainyard serve     [--listen 127.0.0.1:8080] [--data DIR] [--db postgres://...] [--backend auto|local|sim] [--config FILE]
                      [--replica NAME] [--lease-ttl 15s] [--local-dir /var/lib/trainyard] [--node-subnet 198.18.0.0/16]
                      [--sim-op-latency 50ms] [--sim-state FILE]
  trainyard bootstrap [--data DIR | --db URL] --email EMAIL [--name NAME]
  trainyard iam grant [--data DIR | --db URL] --owner EMAIL --user EMAIL --role admin|member|viewer
  trainyard keys revoke [--data DIR | --db URL] (--api-key KEY | --email EMAIL)

Run "trainyard COMMAND -h" for a command's flags.
`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "trainyard:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stderr)
	case "bootstrap":
		return bootstrap(args[1:], stdout, stderr)
	case "iam":
		if len(args) < 2 || args[1] != "grant" {
			fmt.Fprint(stderr, usage)
			return errors.New(`unknown iam command (want "iam grant")`)
		}
		return grant(args[2:], stdout, stderr)
	case "keys":
		if len(args) < 2 || args[1] != "revoke" {
			fmt.Fprint(stderr, usage)
			return errors.New(`unknown keys command (want "keys revoke")`)
		}
		return revoke(args[2:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("trainyard "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	return enc.Encode(v)
}

func bootstrap(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bootstrap", stderr)
	open := storeFlags(fs)
	email := fs.String("email", "", "the owner's email (required)")
	name := fs.String("name", "", "the owner's name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *email == "" {
		return errors.New("bootstrap: --email is required")
	}
	svc, closeStore, err := open()
	if err != nil {
		return err
	}
	defer closeStore()
	r, err := svc.Bootstrap(context.Background(), *email, *name)
	if err != nil {
		return err
	}
	return printJSON(stdout, r)
}

func grant(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("iam grant", stderr)
	open := storeFlags(fs)
	owner := fs.String("owner", "", "email of the account's owner (required)")
	user := fs.String("user", "", "email of the user to grant access to (required)")
	role := fs.String("role", "", "admin, member or viewer (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *owner == "" || *user == "" || *role == "" {
		return errors.New("iam grant: --owner, --user and --role are required")
	}
	svc, closeStore, err := open()
	if err != nil {
		return err
	}
	defer closeStore()
	r, err := svc.GrantIAM(context.Background(), *owner, *user, *role)
	if err != nil {
		return err
	}
	return printJSON(stdout, r)
}

func revoke(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("keys revoke", stderr)
	open := storeFlags(fs)
	apiKey := fs.String("api-key", "", "revoke this key pair")
	email := fs.String("email", "", "revoke every key pair of this user")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*apiKey == "") == (*email == "") {
		return errors.New("keys revoke: give exactly one of --api-key and --email")
	}
	svc, closeStore, err := open()
	if err != nil {
		return err
	}
	defer closeStore()
	if *apiKey != "" {
		err = svc.RevokeKey(context.Background(), *apiKey)
	} else {
		err = svc.RevokeUserKeys(context.Background(), *email)
	}
	if err != nil {
		return err
	}
	return printJSON(stdout, map[string]bool{"revoked": true})
}

// storeFlags adds --data and --db to an administrative command and returns what opens the store
// they name, as a service with the default catalog.
func storeFlags(fs *flag.FlagSet) func() (*service.Service, func(), error) {
	data := fs.String("data", "./data", "data directory")
	dbURL := fs.String("db", "", "a postgres:// URL to use PostgreSQL instead of SQLite in the data directory")
	return func() (*service.Service, func(), error) {
		db, err := openStore(*dbURL, *data)
		if err != nil {
			return nil, nil, err
		}
		return &service.Service{DB: db, Config: config.Default()}, func() { db.Close() }, nil
	}
}

// openStore opens PostgreSQL when url is given, else SQLite in dir.
func openStore(url, dir string) (*store.DB, error) {
	if url != "" {
		if !strings.HasPrefix(url, "postgres://") && !strings.HasPrefix(url, "postgresql://") {
			return nil, fmt.Errorf("--db must be a postgres:// URL")
		}
		return store.OpenPostgres(url)
	}
	return store.OpenSQLite(dir)
}

func serve(args []string, stderr io.Writer) error {
	fs := newFlags("serve", stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "address to serve the API on")
	data := fs.String("data", "./data", "data directory (SQLite store, sim backend state)")
	dbURL := fs.String("db", "", "a postgres:// URL: keep the store in PostgreSQL, shared by several replicas")
	replica := fs.String("replica", "", "this replica's name in leases (default: host and listen address, so a restarted replica resumes its own leases at once)")
	leaseTTL := fs.Duration("lease-ttl", 15*time.Second, "how long a replica's hold on a cluster lasts without renewal")
	backendName := fs.String("backend", "auto", "node backend: local (real Slurm in namespaces; needs root), sim (in-process), or auto: local when it can run here")
	localDir := fs.String("local-dir", "/var/lib/trainyard", "local backend: where clusters' files and image layers live")
	nodeSubnet := fs.String("node-subnet", "198.18.0.0/16", "local backend: node addresses, a /24 per cluster; must overlap no route of this machine")
	simLatency := fs.Duration("sim-op-latency", 50*time.Millisecond, "how long each simulated node operation takes")
	simState := fs.String("sim-state", "", "sim backend: the file its nodes live in (default DATA/sim-nodes.json); replicas on one --db share it")
	cfgPath := fs.String("config", "", "catalog and limits file (default: the embedded defaults)")
	rateLimit := fs.Float64("rate-limit", 20, "requests a second one API key may make on average (negative: no limit)")
	rateBurst := fs.Int("rate-burst", 40, "requests one API key may make at once")
	bootTimeout := fs.Duration("boot-timeout", 5*time.Minute, "how long a node may take to come back after an operation")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	db, err := openStore(*dbURL, *data)
	if err != nil {
		return err
	}
	defer db.Close()

	var backend trainyard.Backend
	name := *backendName
	if name == "auto" {
		name = "local"
		if err := local.Check(); err != nil {
			name = "sim"
			log.Warn("the local backend cannot run here; using the sim backend (nodes are simulated)", "reason", err)
		}
	}
	switch name {
	case "local":
		subnet, err := netip.ParsePrefix(*nodeSubnet)
		if err != nil {
			return fmt.Errorf("--node-subnet: %w", err)
		}
		var pools []netip.Prefix
		for _, p := range cfg.ReservedIPPools {
			pools = append(pools, p)
		}
		var images []trainyard.ImageVersion
		for _, img := range cfg.Images {
			images = append(images, img.Versions...)
		}
		b, err := local.New(context.Background(), local.Options{Dir: *localDir, NodeRange: subnet, IPPools: pools, Images: images, Log: log})
		if err != nil {
			return err
		}
		log.Info("using the local backend: clusters are real Slurm daemons and sshd in network namespaces on this machine",
			"dir", *localDir, "node_subnet", subnet.String())
		backend = b
	case "sim":
		path := *simState
		if path == "" {
			path = filepath.Join(*data, "sim-nodes.json")
		}
		opts := sim.Options{OpLatency: *simLatency, StatePath: path}
		if *dbURL != "" {
			// Replicas share the simulated nodes as they would share real ones.
			b, err := sim.NewShared(opts)
			if err != nil {
				return err
			}
			backend = b
		} else {
			b, err := sim.New(opts)
			if err != nil {
				return err
			}
			backend = b
		}
	default:
		return fmt.Errorf("unknown backend %q (available: auto, local, sim)", *backendName)
	}

	if *replica == "" {
		host, _ := os.Hostname()
		*replica = host + "/" + *listen
	}
	rec := reconcile.New(db, backend, cfg, log, reconcile.Options{BootTimeout: *bootTimeout, Replica: *replica, LeaseTTL: *leaseTTL})
	svc := &service.Service{DB: db, Config: cfg, Backend: backend, Observer: rec, Wake: rec.Wake}
	srv := api.New(svc, log, api.Options{RateLimit: *rateLimit, RateBurst: *rateBurst}).HTTPServer(*listen)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	storeName := "sqlite"
	if db.Postgres() {
		storeName = "postgres"
	}
	log.Info("trainyard serving", "listen", ln.Addr().String(), "data", *data, "store", storeName, "backend", backend.Name(), "replica", rec.Replica())

	recDone := make(chan struct{})
	go func() { rec.Run(ctx); close(recDone) }()
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-srvErr:
		if !errors.Is(err, http.ErrServerClosed) {
			stop()
			<-recDone
			return err
		}
	}
	log.Info("trainyard shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(shutdownCtx)
	<-recDone
	return nil
}
