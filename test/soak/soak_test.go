package soak

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/imds-proxy/imds-proxy/internal/podenv/podenvtest"
)

func TestMain(m *testing.M) { os.Exit(podenvtest.Main(m)) }

// smokeDuration is the length of the soak run by `make test`; `make soak`
// runs it for SOAK_DURATION (10 minutes by default).
const smokeDuration = 60 * time.Second

// TestSoakSmoke runs the soak for a minute, its schedule scaled down (faults
// toggled every 3 s): the same load, faults, rotation, flatness check and
// log scan as `make soak`.
func TestSoakSmoke(t *testing.T) {
	podenvtest.SkipUnlessRoot(t)
	podenvtest.CloseOnSignal()
	dir := podenvtest.BinDir(t) // proxy, proxy-init, entraemu
	ctx, cancel := context.WithTimeout(context.Background(), smokeDuration+5*time.Minute)
	defer cancel()
	if err := BuildClients(ctx, dir); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	rep, err := Run(ctx, Config{Duration: smokeDuration, BinDir: dir, Out: &out, Logf: t.Logf})
	t.Logf("soak output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range rep.Failures {
		t.Errorf("soak: %s", f)
	}
	if len(rep.Faults) < 5 {
		t.Errorf("only %d faults were switched on: %v", len(rep.Faults), rep.Faults)
	}
	if rep.Scan.AccessTokens == 0 || rep.Scan.SATokens < 5 || rep.Scan.AuthzValues == 0 || rep.Scan.Bytes == 0 {
		t.Errorf("the log scan looked for too little: %+v", rep.Scan)
	}
}

func TestSchedule(t *testing.T) {
	for _, tc := range []struct {
		d                                 time.Duration
		interval, report, lifetime, grace time.Duration
		slots                             int
		faultSlots                        []int // slots with a fault on
	}{
		{10 * time.Minute, 30 * time.Second, time.Minute, 4 * time.Minute, 40 * time.Second, 20, []int{1, 3, 5, 7, 9, 11, 13, 15, 17}},
		{time.Minute, 3 * time.Second, 6 * time.Second, 30 * time.Second, 5 * time.Second, 20, []int{1, 3, 5, 7, 9, 11, 13, 15, 17}},
		{30 * time.Second, 3 * time.Second, 5 * time.Second, 30 * time.Second, 5 * time.Second, 10, []int{1, 3, 5, 7}},
		{time.Hour, 30 * time.Second, time.Minute, 4 * time.Minute, 40 * time.Second, 120, nil},
	} {
		s := newSchedule(tc.d)
		if s.interval != tc.interval || s.report != tc.report || s.tokenLifetime != tc.lifetime || s.staleGrace != tc.grace || s.slots() != tc.slots {
			t.Errorf("%s: interval %s, report %s, lifetime %s, grace %s, slots %d", tc.d, s.interval, s.report, s.tokenLifetime, s.staleGrace, s.slots())
		}
		if tc.faultSlots == nil {
			continue
		}
		var got []int
		for slot := range s.slots() {
			if k := s.faultAt(slot); k >= 0 {
				got = append(got, slot)
				if k != (slot-1)/2 {
					t.Errorf("%s: slot %d has fault %d", tc.d, slot, k)
				}
			}
		}
		if len(got) != len(tc.faultSlots) {
			t.Errorf("%s: faults in slots %v, want %v", tc.d, got, tc.faultSlots)
		}
		if s.faultAt(0) != -1 || s.faultAt(s.slots()-1) != -1 {
			t.Errorf("%s: the warm-up or the last slot has a fault", tc.d)
		}
	}
}
