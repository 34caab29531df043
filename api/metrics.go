package api

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/trainyard/trainyard/service"
	"github.com/trainyard/trainyard/store"
)

// metrics keeps request latency histograms in the Prometheus text format. It is small enough
// that a client library would be more code to depend on than to write.
type metrics struct {
	mu       sync.Mutex
	requests map[reqKey]*histogram
}

type reqKey struct{ method, route, code string }

type histogram struct {
	counts []uint64 // per bucket, not cumulative
	sum    float64
	count  uint64
}

// latencyBuckets are the upper bounds, in seconds, of the request latency histogram.
var latencyBuckets = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

func newMetrics() *metrics { return &metrics{requests: map[reqKey]*histogram{}} }

type routeKey struct{}

// setRoute records which route pattern served the request, so that latency is labelled by
// route and not by raw path (which would have one series per cluster id).
func (m *metrics) setRoute(r *http.Request, pattern string) {
	if p, ok := r.Context().Value(routeKey{}).(*string); ok {
		*p = pattern
	}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (m *metrics) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		route := "unmatched"
		r = r.WithContext(context.WithValue(r.Context(), routeKey{}, &route))
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		method := r.Method
		switch method {
		case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodHead, http.MethodPatch, http.MethodOptions:
		default:
			method = "OTHER" // clients choose methods; series must stay bounded
		}
		m.observe(reqKey{method, route, fmt.Sprint(rec.status)}, time.Since(start).Seconds())
	})
}

func (m *metrics) observe(k reqKey, seconds float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.requests[k]
	if h == nil {
		h = &histogram{counts: make([]uint64, len(latencyBuckets))}
		m.requests[k] = h
	}
	for i, b := range latencyBuckets {
		if seconds <= b {
			h.counts[i]++
			break
		}
	}
	h.sum += seconds
	h.count++
}

func label(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

// handler serves /metrics: request latency, and actions by type and status from the store.
func (m *metrics) handler(svc *service.Service) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.setRoute(r, "/metrics")
		var b strings.Builder
		b.WriteString("# HELP trainyard_http_request_duration_seconds Latency of API requests.\n")
		b.WriteString("# TYPE trainyard_http_request_duration_seconds histogram\n")
		m.mu.Lock()
		keys := make([]reqKey, 0, len(m.requests))
		for k := range m.requests {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j])
		})
		for _, k := range keys {
			h := m.requests[k]
			labels := fmt.Sprintf(`method="%s",route="%s",code="%s"`, label(k.method), label(k.route), label(k.code))
			var cum uint64
			for i, bound := range latencyBuckets {
				cum += h.counts[i]
				fmt.Fprintf(&b, "trainyard_http_request_duration_seconds_bucket{%s,le=\"%g\"} %d\n", labels, bound, cum)
			}
			fmt.Fprintf(&b, "trainyard_http_request_duration_seconds_bucket{%s,le=\"+Inf\"} %d\n", labels, h.count)
			fmt.Fprintf(&b, "trainyard_http_request_duration_seconds_sum{%s} %g\n", labels, h.sum)
			fmt.Fprintf(&b, "trainyard_http_request_duration_seconds_count{%s} %d\n", labels, h.count)
		}
		m.mu.Unlock()
		var counts map[[2]string]int
		err := svc.DB.Read(r.Context(), func(ctx context.Context, tx *store.Tx) error {
			var err error
			counts, err = tx.ActionCounts(ctx)
			return err
		})
		if err == nil {
			b.WriteString("# HELP trainyard_actions Actions kept in the store, by type and status.\n")
			b.WriteString("# TYPE trainyard_actions gauge\n")
			ks := make([][2]string, 0, len(counts))
			for k := range counts {
				ks = append(ks, k)
			}
			sort.Slice(ks, func(i, j int) bool { return ks[i][0]+ks[i][1] < ks[j][0]+ks[j][1] })
			for _, k := range ks {
				fmt.Fprintf(&b, "trainyard_actions{type=\"%s\",status=\"%s\"} %d\n", label(k[0]), label(k[1]), counts[k])
			}
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		w.Write([]byte(b.String()))
	})
}
