// Package openapitest checks HTTP answers against the API's OpenAPI document (api.OpenAPI), so
// that tests of the server catch any drift between what it answers and what the document
// promises: an undocumented route, method or status, a missing or extra field, a wrong type.
package openapitest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/trainyard/trainyard/api"
)

// Validator checks answers against the document.
type Validator struct {
	doc    *openapi3.T
	router routers.Router
	opts   *openapi3filter.Options
}

// Load parses and validates the document b and returns a Validator for it.
func Load(b []byte) (*Validator, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(b)
	if err != nil {
		return nil, fmt.Errorf("openapitest: loading the document: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("openapitest: the document is invalid: %w", err)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("openapitest: routing the document: %w", err)
	}
	return &Validator{
		doc:    doc,
		router: router,
		opts: &openapi3filter.Options{
			IncludeResponseStatus: true, // an undocumented status is a failure
			MultiError:            true,
			AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
		},
	}, nil
}

// New returns a Validator for the API's embedded document; it fails t when the document does
// not load or is invalid.
func New(t testing.TB) *Validator {
	t.Helper()
	v, err := Load(api.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Doc returns the loaded document.
func (v *Validator) Doc() *openapi3.T { return v.doc }

// Validate reports how the answer (status, header, body) to req departs from the document, or
// nil when it matches. A route, method or status the document does not have is an error.
func (v *Validator) Validate(req *http.Request, status int, header http.Header, body []byte) error {
	route, params, err := v.router.FindRoute(req)
	if err != nil {
		// A path or method the API does not have is outside the document by definition; its
		// answer must still be the error envelope.
		if status == http.StatusNotFound || status == http.StatusMethodNotAllowed {
			return v.validateErrorEnvelope(body)
		}
		return fmt.Errorf("route not documented: %w", err)
	}
	if header == nil {
		header = http.Header{}
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request:    req,
			PathParams: params,
			Route:      route,
			Options:    v.opts,
		},
		Status:  status,
		Header:  header,
		Body:    io.NopCloser(bytes.NewReader(body)),
		Options: v.opts,
	}
	return openapi3filter.ValidateResponse(req.Context(), in)
}

func (v *Validator) validateErrorEnvelope(body []byte) error {
	ref := v.doc.Components.Schemas["ErrorEnvelope"]
	if ref == nil || ref.Value == nil {
		return fmt.Errorf("the document has no ErrorEnvelope schema")
	}
	var doc any
	if err := json.Unmarshal(body, &doc); err != nil {
		return fmt.Errorf("answer is not JSON: %w", err)
	}
	return ref.Value.VisitJSON(doc)
}

// Check fails t (without stopping it) when the answer to req does not match the document.
func (v *Validator) Check(t testing.TB, req *http.Request, status int, header http.Header, body []byte) {
	t.Helper()
	if err := v.Validate(req, status, header, body); err != nil {
		t.Errorf("openapi: %s %s answered %d, which does not match the document: %v\nbody: %s",
			req.Method, req.URL.Path, status, err, truncate(body, 4096))
	}
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "..."
}

// Transport returns a RoundTripper that sends requests through base (http.DefaultTransport when
// nil) and checks every answer with Check. The answer's body is read and restored, so callers
// see it unchanged.
func (v *Validator) Transport(t testing.TB, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{v: v, t: t, base: base}
}

type transport struct {
	v    *Validator
	t    testing.TB
	base http.RoundTripper
}

func (tr *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := tr.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("openapitest: reading the answer to %s %s: %w", req.Method, req.URL.Path, err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	tr.v.Check(tr.t, req, resp.StatusCode, resp.Header, body)
	return resp, nil
}
