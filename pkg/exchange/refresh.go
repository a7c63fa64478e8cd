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

// Run refreshes cached tokens ahead of expiry and evicts idle ones every
// TickInterval until ctx is done. It returns nil when ctx ends.
func (s *Source) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.round(ctx)
		}
	}
}

// round does one round of background work at the Clock's current time and
// returns when it is done:
//   - an expired entry, or one not handed out for a whole lifetime, is
//     dropped;
//   - an entry handed out since its last fetch and past half its lifetime
//     is refreshed; a failed refresh keeps the old token and is retried
//     after refreshRetryInterval.
//
// Run calls it; tests call it directly after moving their clock.
func (s *Source) round(ctx context.Context) {
	due, evicted := s.cache.sweep(s.clock.Now())
	for _, ev := range evicted {
		s.m.evictions.WithLabelValues(ev.cause).Inc()
		s.log.V(1).Info("evicted "+ev.cause+" token", "clientID", ev.key.clientID, "scope", ev.key.scope)
	}
	if len(due) == 0 {
		return
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
