package trainyard

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Error codes. Each maps to exactly one HTTP status in package api; nothing else in the project
// chooses a status.
const (
	EINVALID      = "invalid"      // 400: the request is malformed or refers to what does not exist
	EUNAUTHORIZED = "unauthorized" // 401: missing or bad credentials
	EFORBIDDEN    = "forbidden"    // 403: authenticated, but the role may not do this
	ENOTFOUND     = "not_found"    // 404: no such resource visible to the caller
	ECONFLICT     = "conflict"     // 409: the resource is in a state that forbids the request
	ETOOLARGE     = "too_large"    // 413: request body over the limit
	EMISMATCH     = "mismatch"     // 422: an Idempotency-Key reused with a different request
	ERATELIMIT    = "rate_limited" // 429
	EINTERNAL     = "internal"     // 500: a bug or an unavailable dependency
	EUNAVAILABLE  = "unavailable"  // 503: not ready
)

// Error is the one error type that crosses package boundaries towards a client. Fields names the
// request fields at fault, each with one or more human-readable messages.
type Error struct {
	Code    string
	Message string
	Fields  map[string][]string
}

func (e *Error) Error() string {
	if len(e.Fields) == 0 {
		return e.Code + ": " + e.Message
	}
	keys := make([]string, 0, len(e.Fields))
	for k := range e.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+": "+strings.Join(e.Fields[k], "; "))
	}
	return e.Code + ": " + e.Message + " (" + strings.Join(parts, ", ") + ")"
}

// Errorf returns an Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// FieldError returns an EINVALID error naming one field.
func FieldError(field, format string, args ...any) *Error {
	msg := fmt.Sprintf(format, args...)
	return &Error{Code: EINVALID, Message: "Bad Request", Fields: map[string][]string{field: {msg}}}
}

// With returns e with one more field message.
func (e *Error) With(field, format string, args ...any) *Error {
	if e.Fields == nil {
		e.Fields = map[string][]string{}
	}
	e.Fields[field] = append(e.Fields[field], fmt.Sprintf(format, args...))
	return e
}

// ErrorCode returns the code of err, EINTERNAL for errors that are not an *Error.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if err == nil {
		return ""
	}
	return EINTERNAL
}

// Problems collects field errors during validation so that a client learns about every bad field
// at once.
type Problems struct{ fields map[string][]string }

// Add records a problem with field.
func (p *Problems) Add(field, format string, args ...any) {
	if p.fields == nil {
		p.fields = map[string][]string{}
	}
	p.fields[field] = append(p.fields[field], fmt.Sprintf(format, args...))
}

// Has reports whether field already has a problem.
func (p *Problems) Has(field string) bool { return len(p.fields[field]) > 0 }

// Err returns nil when nothing was added, else an EINVALID error with every field.
func (p *Problems) Err() error {
	if len(p.fields) == 0 {
		return nil
	}
	return &Error{Code: EINVALID, Message: "Bad Request", Fields: p.fields}
}
