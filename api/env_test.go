package api_test

import (
	"testing"

	"github.com/trainyard/trainyard/internal/testenv"
)

// newEnv starts a whole trainyard for one test.
func newEnv(t *testing.T) *testenv.Env {
	t.Helper()
	return testenv.New(t, testenv.Options{})
}
