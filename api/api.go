// Package api serves the TIR Training Cluster API over HTTP: routing, authentication, the
// {code, data, errors, message} envelope on every answer, request decoding, Idempotency-Key
// replay, and the mapping of domain error codes to HTTP statuses (the one place that mapping
// lives). It holds no rules of its own: those are in package service.
package api

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/trainyard/trainyard"
	"github.com/trainyard/trainyard/service"
	"github.com/trainyard/trainyard/store"
)

// BasePath is where the hosted service serves the GPU API.
const BasePath = "/myaccount/api/v1/gpu"

// MaxBodyBytes bounds a request body.
const MaxBodyBytes = 1 << 20

//go:embed openapi.json
var OpenAPI []byte

// Server is the HTTP face of a Service.
type Server struct {
	svc     *service.Service
	log     *slog.Logger
	metrics *metrics
	limiter *limiter
	routes  []route
	ready   func(ctx context.Context) error
}

// Options tune a Server.
type Options struct {
	// Ready, when set, is what /readyz checks besides the store.
	Ready func(ctx context.Context) error
	// RateLimit is how many requests a second one key pair may make on average (default 20),
	// RateBurst how many at once (default 40). A negative RateLimit turns limiting off.
	RateLimit float64
	RateBurst int
}

// New returns a server for svc.
func New(svc *service.Service, log *slog.Logger, opts Options) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.RateLimit == 0 {
		opts.RateLimit = 20
	}
	if opts.RateBurst <= 0 {
		opts.RateBurst = 40
	}
	s := &Server{svc: svc, log: log, metrics: newMetrics(), ready: opts.Ready}
	if opts.RateLimit > 0 {
		s.limiter = newLimiter(opts.RateLimit, opts.RateBurst)
	}
	s.routes = s.table()
	return s
}

// response is what a handler answers on success.
type response struct {
	status  int
	message string
	data    any
	list    *listInfo
	header  http.Header
}

type listInfo struct {
	total   int
	perPage int
}

// request is what handlers get: the HTTP request, its path values and the authenticated caller.
type request struct {
	*http.Request
	caller trainyard.Caller
	body   []byte
}

type handler func(r *request) (*response, error)

type route struct {
	pattern string // a net/http pattern without method
	methods map[string]handler
	public  bool // no authentication
}

// envelope is every answer's shape.
type envelope struct {
	Code            int                 `json:"code"`
	Data            any                 `json:"data"`
	Errors          map[string][]string `json:"errors"`
	Message         string              `json:"message"`
	TotalCount      *int                `json:"total_count,omitempty"`
	TotalPageNumber *int                `json:"total_page_number,omitempty"`
}

// statusOf maps a domain error code to its HTTP status.
func statusOf(code string) int {
	switch code {
	case trainyard.EINVALID:
		return http.StatusBadRequest
	case trainyard.EUNAUTHORIZED:
		return http.StatusUnauthorized
	case trainyard.EFORBIDDEN:
		return http.StatusForbidden
	case trainyard.ENOTFOUND:
		return http.StatusNotFound
	case trainyard.ECONFLICT:
		return http.StatusConflict
	case trainyard.ETOOLARGE:
		return http.StatusRequestEntityTooLarge
	case trainyard.EMISMATCH:
		return http.StatusUnprocessableEntity
	case trainyard.ERATELIMIT:
		return http.StatusTooManyRequests
	case trainyard.EUNAVAILABLE:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// encodeError renders err in the envelope; internal errors are logged, not shown.
func (s *Server) encodeError(err error) (int, []byte) {
	var e *trainyard.Error
	if errors.Is(err, context.DeadlineExceeded) {
		e = trainyard.Errorf(trainyard.EUNAVAILABLE, "Request timed out")
	} else if !errors.As(err, &e) {
		s.log.Error("api: internal error", "err", err)
		e = &trainyard.Error{Code: trainyard.EINTERNAL, Message: "Internal server error"}
	}
	status := statusOf(e.Code)
	fields := e.Fields
	if fields == nil {
		fields = map[string][]string{}
	}
	msg := e.Message
	if msg == "Bad Request" && len(fields) > 0 {
		msg = "Bad Request: " + describeFields(fields)
	}
	b, _ := json.Marshal(envelope{Code: status, Data: nil, Errors: fields, Message: msg})
	return status, b
}

func describeFields(fields map[string][]string) string {
	var parts []string
	for k, v := range fields {
		parts = append(parts, k+": "+strings.Join(v, "; "))
	}
	sortStrings(parts)
	if len(parts) > 3 {
		parts = append(parts[:3], "...")
	}
	return strings.Join(parts, ", ")
}

func encodeResponse(r *response) []byte {
	env := envelope{Code: r.status, Data: r.data, Errors: map[string][]string{}, Message: r.message}
	if r.list != nil {
		total := r.list.total
		pages := 1
		if r.list.perPage > 0 {
			pages = max(1, (total+r.list.perPage-1)/r.list.perPage)
		}
		env.TotalCount, env.TotalPageNumber = &total, &pages
	}
	b, err := json.Marshal(env)
	if err != nil {
		panic("api: response does not marshal: " + err.Error())
	}
	return b
}

func writeBody(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
	w.Write([]byte("\n"))
}

// Handler returns the HTTP handler of the whole API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routes {
		mux.Handle(rt.pattern, s.dispatch(rt))
	}
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, r *http.Request) {
		s.metrics.setRoute(r, "/openapi.json")
		w.Header().Set("Content-Type", "application/json")
		w.Write(OpenAPI)
	})
	mux.Handle("GET /metrics", s.metrics.handler(s.svc))
	mux.Handle("/", s.dispatch(route{pattern: "/", public: true}))
	return s.metrics.middleware(mux)
}

// dispatch picks the route's handler for the method and runs it with authentication, body
// reading and idempotency.
func (s *Server) dispatch(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, hr *http.Request) {
		s.metrics.setRoute(hr, rt.pattern)
		defer func() {
			if v := recover(); v != nil {
				s.log.Error("api: panic", "panic", v, "path", hr.URL.Path)
				status, b := s.encodeError(fmt.Errorf("panic: %v", v))
				writeBody(w, status, b)
			}
		}()
		if rt.methods == nil {
			status, b := s.encodeError(trainyard.Errorf(trainyard.ENOTFOUND, "Not Found: no endpoint %s (see /openapi.json)", hr.URL.Path))
			writeBody(w, status, b)
			return
		}
		h, ok := rt.methods[hr.Method]
		if !ok {
			var allowed []string
			for m := range rt.methods {
				allowed = append(allowed, m)
			}
			sortStrings(allowed)
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			b, _ := json.Marshal(envelope{Code: http.StatusMethodNotAllowed, Errors: map[string][]string{},
				Message: "Method Not Allowed: use " + strings.Join(allowed, ", ")})
			writeBody(w, http.StatusMethodNotAllowed, b)
			return
		}
		r := &request{Request: hr}
		status, b, header := s.serve(rt, h, r)
		for k, v := range header {
			w.Header()[k] = v
		}
		writeBody(w, status, b)
	})
}

func (s *Server) serve(rt route, h handler, r *request) (status int, body []byte, header http.Header) {
	if r.Method == http.MethodPost || r.Method == http.MethodPut {
		body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxBodyBytes))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				st, b := s.encodeError(trainyard.Errorf(trainyard.ETOOLARGE, "Request body is larger than %d bytes", MaxBodyBytes))
				return st, b, nil
			}
			st, b := s.encodeError(trainyard.FieldError("body", "could not be read"))
			return st, b, nil
		}
		r.body = body
	}
	if !rt.public {
		c, err := s.authenticate(r)
		if err != nil {
			st, b := s.encodeError(err)
			return st, b, nil
		}
		r.caller = c
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			defer func() { s.audit(r, status) }() // refused by the rate limit too
		}
		if wait, ok := s.limiter.allow(c.APIKeyID); !ok {
			st, b := s.encodeError(trainyard.Errorf(trainyard.ERATELIMIT, "Too many requests for this API key: retry in %s", wait.Round(time.Millisecond)))
			return st, b, http.Header{"Retry-After": {strconv.Itoa(int(wait.Seconds()) + 1)}}
		}
	}
	key := r.Header.Get("Idempotency-Key")
	if key == "" || (r.Method != http.MethodPost && r.Method != http.MethodPut) || rt.public {
		resp, err := h(r)
		if err != nil {
			st, b := s.encodeError(err)
			return st, b, nil
		}
		return resp.status, encodeResponse(resp), resp.header
	}
	return s.serveIdempotent(h, r, key)
}

// answered carries a rejected request's answer out of the transaction that it rolls back.
type answered struct {
	status int
	body   []byte
}

func (answered) Error() string { return "answered" }

// serveIdempotent runs h and stores its answer in one transaction with whatever h changed, so a
// retry with the same key gets the first answer even if the server died right after it.
func (s *Server) serveIdempotent(h handler, r *request, key string) (int, []byte, http.Header) {
	if len(key) > 255 || strings.ContainsFunc(key, func(c rune) bool { return c < 0x21 || c > 0x7e }) {
		st, b := s.encodeError(trainyard.FieldError("Idempotency-Key", "must be 1 to 255 printable ASCII characters"))
		return st, b, nil
	}
	q := r.URL.Query()
	q.Del("apikey")
	sum := sha256.Sum256([]byte(r.Method + " " + r.URL.Path + "?" + q.Encode() + "\n" + string(r.body)))
	hash := hex.EncodeToString(sum[:])
	var status int
	var out []byte
	var header http.Header
	err := s.svc.DB.Write(r.Context(), func(ctx context.Context, tx *store.Tx) error {
		prev, ok, err := tx.IdempotentAnswer(ctx, r.caller.User.ID, key)
		if err != nil {
			return err
		}
		if ok {
			if prev.RequestHash != hash {
				return trainyard.Errorf(trainyard.EMISMATCH, "Idempotency-Key %q was used for a different request", key)
			}
			status, out, header = prev.StatusCode, prev.Response, http.Header(prev.Header)
			if header == nil {
				header = http.Header{}
			}
			header.Set("Idempotent-Replayed", "true")
			return nil
		}
		r.Request = r.Request.WithContext(ctx)
		resp, err := h(r)
		if store.Retryable(err) {
			return err // the store runs the whole transaction again
		}
		if err != nil {
			st, b := s.encodeError(err)
			return answered{st, b}
		}
		status, out, header = resp.status, encodeResponse(resp), resp.header
		return tx.PutIdempotentAnswer(ctx, r.caller.User.ID, key, store.Idempotent{RequestHash: hash, StatusCode: status, Response: out, Header: header})
	})
	var a answered
	if errors.As(err, &a) {
		return a.status, a.body, nil
	}
	if err != nil {
		st, b := s.encodeError(err)
		return st, b, nil
	}
	return status, out, header
}

func (s *Server) authenticate(r *request) (trainyard.Caller, error) {
	q := r.URL.Query()
	token := ""
	if scheme, value, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
		token = value
	}
	var iam int64
	if v := q.Get("active_iam"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return trainyard.Caller{}, trainyard.FieldError("active_iam", "must be a positive integer")
		}
		iam = n
	}
	return s.svc.Authenticate(r.Context(), q.Get("apikey"), strings.TrimSpace(token), iam)
}

// queryInt reads a positive integer query parameter; required ones must be present.
func queryInt(r *request, name string, required bool, p *trainyard.Problems) int64 {
	v := r.URL.Query().Get(name)
	if v == "" {
		if required {
			p.Add(name, "is required")
		}
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 {
		p.Add(name, "must be a positive integer")
		return 0
	}
	return n
}

// pathID reads a positive integer path value.
func pathID(r *request, name, field string) (int64, error) {
	n, err := strconv.ParseInt(r.PathValue(name), 10, 64)
	if err != nil || n < 1 {
		return 0, trainyard.FieldError(field, "must be a positive integer")
	}
	return n, nil
}

// page reads page_no and per_page (default 1 and 10, per_page at most 100).
func page(r *request, p *trainyard.Problems) store.Page {
	no := queryInt(r, "page_no", false, p)
	per := queryInt(r, "per_page", false, p)
	if no == 0 {
		no = 1
	}
	if per == 0 {
		per = 10
	}
	if per > 100 {
		p.Add("per_page", "must be at most 100")
	}
	if no > 1_000_000 {
		p.Add("page_no", "must be at most 1000000")
	}
	return store.Page{No: int(no), PerPage: int(per)}
}

// scope resolves project_id and location of a project-scoped request.
func (s *Server) scope(r *request, p *trainyard.Problems) (trainyard.Scope, error) {
	pid := queryInt(r, "project_id", true, p)
	loc := r.URL.Query().Get("location")
	if loc == "" {
		p.Add("location", "is required")
	}
	if err := p.Err(); err != nil {
		return trainyard.Scope{}, err
	}
	return s.svc.Scope(r.Context(), r.caller, pid, loc)
}

func ok(status int, message string, data any) *response {
	return &response{status: status, message: message, data: data}
}

func list(message string, data any, total int, pg store.Page) *response {
	return &response{status: http.StatusOK, message: message, data: data, list: &listInfo{total: total, perPage: pg.PerPage}}
}

// RequestTimeout bounds the work of one request: its context ends then, and a request still
// waiting on the store is answered 503.
const RequestTimeout = 60 * time.Second

func withTimeout(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// HTTPServer returns an *http.Server with timeouts suited to the API.
func (s *Server) HTTPServer(addr string) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           withTimeout(s.Handler(), RequestTimeout),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      90 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}
