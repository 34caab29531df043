# The README's commands are the entry points; these targets are conveniences around them.
.PHONY: test fuzz faults

# Everything, as CI runs it.
test:
	scripts/test

FUZZTIME ?= 60s
# Each fuzz target for FUZZTIME (CI runs only their seed corpora, as part of `test`).
fuzz:
	for f in FuzzClusterAction FuzzCreateBodies FuzzSecurityGroupRules FuzzQueries; do \
		go test -run XXX -fuzz "^$$f$$" -fuzztime $(FUZZTIME) ./api/ || exit 1; \
	done

TRIALS ?= 1000
# The crash-point test with many more kill -9 trials than CI's 100, and the fault tests again.
faults:
	TRAINYARD_CRASH_TRIALS=$(TRIALS) go test -count=1 -timeout 60m -run 'TestCrashPoints|TestKillDashNine|TestReplicas' ./cmd/trainyard/
	go test -count=5 -run 'TestRolling|TestNode|TestUnavailable|TestDrains|TestConcurrent|TestResume|TestFailed' ./reconcile/
