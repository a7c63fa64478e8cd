package exchange

import (
	"context"
	"sync"
	"time"
)

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
			s.Tick(ctx)
		}
	}
}

// Tick does one round of background work at the Clock's current time and
// returns when it is done:
//   - an expired entry, or one not handed out for a whole lifetime, is
//     dropped;
//   - an entry handed out since its last fetch and past half its lifetime
//     is refreshed (SPEC §4); a failed refresh keeps the old token and is
//     retried after refreshRetryInterval.
//
// Run calls Tick on a ticker; tests call it directly after moving their
// clock.
func (s *Source) Tick(ctx context.Context) {
	now := s.clock.Now()
	type job struct {
		k    cacheKey
		seen uint64
	}
	var due []job
	s.mu.Lock()
	for e := s.lru.Back(); e != nil; {
		prev := e.Prev()
		en := e.Value.(*entry)
		switch {
		case en.refreshing:
		case !now.Before(en.tok.ExpiresOn):
			s.removeLocked(en)
			s.m.evictions.WithLabelValues("expired").Inc()
			s.log.V(1).Info("evicted expired token", "clientID", en.key.clientID, "scope", en.key.scope)
		case now.Sub(en.lastUsed) >= en.lifetime:
			s.removeLocked(en)
			s.m.evictions.WithLabelValues("idle").Inc()
			s.log.V(1).Info("evicted idle token", "clientID", en.key.clientID, "scope", en.key.scope)
		case en.served && now.Sub(en.fetchedAt) >= en.lifetime/2 && !now.Before(en.nextRefresh):
			en.refreshing = true
			due = append(due, job{en.key, en.seq})
		}
		e = prev
	}
	s.mu.Unlock()
	if len(due) == 0 {
		return
	}

	sem := make(chan struct{}, refreshConcurrency)
	var wg sync.WaitGroup
	for _, j := range due {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			s.clearRefreshing(j.k, time.Time{})
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s.refresh(ctx, j.k, j.seen)
		}()
	}
	wg.Wait()
}

// refresh renews one entry through the same singleflight as foreground
// misses, so a concurrent miss and a refresh make one Entra call. Unlike a
// foreground exchange it stays bound to ctx, so Run returns promptly when
// the proxy shuts down.
func (s *Source) refresh(ctx context.Context, k cacheKey, seen uint64) {
	_, err, _ := s.sf.Do(k.flightKey(), func() (any, error) {
		fctx, cancel := context.WithTimeout(ctx, s.cfg.ExchangeTimeout)
		defer cancel()
		return s.fetch(fctx, k, seen)
	})
	if err != nil {
		s.m.refreshes.WithLabelValues("failure").Inc()
		s.clearRefreshing(k, s.clock.Now().Add(refreshRetryInterval))
		return
	}
	s.m.refreshes.WithLabelValues("success").Inc()
	s.clearRefreshing(k, time.Time{})
}

func (s *Source) clearRefreshing(k cacheKey, next time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entries[k]; e != nil {
		e.refreshing = false
		if !next.IsZero() {
			e.nextRefresh = next
		}
	}
}
