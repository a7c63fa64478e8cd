package exchange

import (
	"context"
	"sync"
	"time"
)

// refreshRetryInterval spaces background refresh attempts for one key after
// a failure, so an Entra outage does not turn every round into a burst.
const refreshRetryInterval = 30 * time.Second

// refreshConcurrency bounds the refresh-ahead exchanges one round runs at
// once. They take their slots from Config.MaxConcurrentExchanges like
// foreground misses, and never more than half of them (at least one), so
// a round with many tokens due does not make requests queue behind it.
const refreshConcurrency = 4

func refreshWorkers(maxConcurrentExchanges int) int {
	return max(1, min(refreshConcurrency, maxConcurrentExchanges/2))
}

// minRoundInterval is the shortest sleep between two rounds of Run, a
// guard against spinning should a due time ever stay in the past.
const minRoundInterval = time.Second

// Run refreshes cached tokens ahead of expiry and evicts expired and idle
// ones until ctx is done; it returns nil when ctx ends. It does not tick:
// after each round it sleeps until the next refresh, eviction or retry is
// due, or until the cache changes (a token stored, a token handed out for
// the first time since its fetch, a refresh ended), so an idle proxy wakes
// only when its refresh schedule needs it.
func (s *Source) Run(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		var wake <-chan time.Time
		if next := s.round(ctx); !next.IsZero() {
			timer.Reset(max(next.Sub(s.clock.Now()), minRoundInterval))
			wake = timer.C
		} else {
			timer.Stop()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.cache.changed:
		case <-wake:
		}
	}
}

// round does one round of background work at the Clock's current time and
// returns when it is done, with the time the next round is due (zero when
// nothing is cached):
//   - an expired entry, or one not handed out for a whole lifetime, is
//     dropped;
//   - an entry handed out since its last fetch and past half its lifetime
//     is refreshed; a failed refresh keeps the old token and is retried
//     after refreshRetryInterval, or after Entra's Retry-After when that is
//     later.
//
// Run calls it; tests call it directly after moving their clock.
func (s *Source) round(ctx context.Context) time.Time {
	due, evicted, next := s.cache.sweep(s.clock.Now())
	for _, ev := range evicted {
		s.m.evictions.WithLabelValues(ev.cause).Inc()
		s.log.V(1).Info("evicted "+ev.cause+" token", "clientID", ev.key.clientID, "scope", ev.key.scope)
	}
	if len(due) == 0 {
		return next
	}
	sem := make(chan struct{}, refreshWorkers(s.cfg.MaxConcurrentExchanges))
	var wg sync.WaitGroup
	for _, j := range due {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			s.cache.refreshDone(j.key, time.Time{})
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s.refresh(ctx, j)
		}()
	}
	wg.Wait()
	// The refreshed entries have new due times; refreshDone signalled the
	// change, so Run goes round once more at once and learns them.
	return next
}

// refresh renews one entry; a failure keeps the old token.
func (s *Source) refresh(ctx context.Context, j refreshJob) {
	if err := s.ex.refresh(ctx, j.key, j.seen); err != nil {
		s.m.refreshes.WithLabelValues("failure").Inc()
		s.cache.refreshDone(j.key, s.clock.Now().Add(refreshRetryInterval))
		return
	}
	s.m.refreshes.WithLabelValues("success").Inc()
	s.cache.refreshDone(j.key, time.Time{})
}
