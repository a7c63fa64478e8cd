package app

import (
	"context"
	"os"
	"testing"
)

// reexecEnv makes the test binary act as proxy-init, so the real-kernel tests
// run the real command, with its real exit codes, inside a network namespace.
const reexecEnv = "IMDS_PROXY_INIT_TEST_REEXEC"

func TestMain(m *testing.M) {
	if os.Getenv(reexecEnv) == "1" {
		os.Exit(Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv))
	}
	os.Exit(m.Run())
}
