package api

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// A request that runs out of time is answered 503 in the envelope, not 500.
func TestRequestTimeout(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler)}
	h := withTimeout(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // a handler stuck on the store until the deadline
		status, body := s.encodeError(r.Context().Err())
		writeBody(w, status, body)
	}), 30*time.Millisecond)
	rec := httptest.NewRecorder()
	start := time.Now()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the deadline did not end the request (%s)", took)
	}
	var env struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil || rec.Code != http.StatusServiceUnavailable || env.Code != 503 {
		t.Errorf("answer %d %s", rec.Code, rec.Body)
	}
}
