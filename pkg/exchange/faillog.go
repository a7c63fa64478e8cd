package exchange

import (
	"errors"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// failureLogInterval is how often one failure repeated for one identity
// and scope is logged. While Entra is down and nothing is cached, every
// request fails the same way; one line a minute per key, counting the
// failures folded in, says as much as one line per request.
const failureLogInterval = time.Minute

// failureLog logs failed exchanges, folding repeats: the first failure of
// a key is logged at once and opens an interval of failureLogInterval;
// further failures of the key with the same reason and AADSTS code inside
// the interval are only counted. The next line logged for the key (the
// first failure after the interval, or a different failure) carries that
// count as "suppressed". It is safe for concurrent use.
type failureLog struct {
	log      logr.Logger
	interval time.Duration
	// max bounds the keys remembered, since keys come from requests.
	max int

	mu   sync.Mutex
	keys map[cacheKey]*foldedFailure
}

// foldedFailure is the last failure logged for a key and what was folded
// in since.
type foldedFailure struct {
	reason Reason
	code   string
	// until ends the interval the logged line opened.
	until time.Time
	// suppressed counts the failures not logged since that line.
	suppressed int
}

func newFailureLog(log logr.Logger, interval time.Duration, maxKeys int) *failureLog {
	return &failureLog{log: log, interval: interval, max: maxKeys, keys: make(map[cacheKey]*foldedFailure)}
}

// failed logs, or folds, the failure of an exchange for k at now. Raw
// upstream text goes here, redacted, never to the client; xerr's own text
// is Reason, Code, Detail and the redacted cause.
func (l *failureLog) failed(k cacheKey, xerr *Error, now time.Time) {
	suppressed, log := l.fold(k, xerr, now)
	if !log {
		return
	}
	kv := []any{"clientID", k.clientID, "scope", k.scope, "reason", xerr.Reason.String(), "code", xerr.Code, "suppressed", suppressed}
	var up *upstreamError
	if errors.As(xerr.Err, &up) {
		kv = append(kv, "status", up.Status, "body", redact(string(up.Body)))
	}
	l.log.Error(xerr, "token exchange failed", kv...)
}

// fold reports whether the failure is to be logged and, if so, how many
// failures of k were folded in since the previous line.
func (l *failureLog) fold(k cacheKey, xerr *Error, now time.Time) (suppressed int, log bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.keys[k]
	if f != nil && now.Before(f.until) && f.reason == xerr.Reason && f.code == xerr.Code {
		f.suppressed++
		return 0, false
	}
	if f == nil {
		if len(l.keys) >= l.max {
			l.purgeLocked(now)
		}
		f = &foldedFailure{}
		l.keys[k] = f
	}
	suppressed = f.suppressed
	*f = foldedFailure{reason: xerr.Reason, code: xerr.Code, until: now.Add(l.interval)}
	return suppressed, true
}

// purgeLocked makes room: it drops the keys whose interval is over, and
// everything if that is not enough. The counts dropped are never reported;
// that only happens with more failing keys than cached tokens.
func (l *failureLog) purgeLocked(now time.Time) {
	for k, f := range l.keys {
		if !now.Before(f.until) {
			delete(l.keys, k)
		}
	}
	if len(l.keys) >= l.max {
		clear(l.keys)
	}
}
