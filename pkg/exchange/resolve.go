package exchange

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// resolveAndToken serves an object_id / msi_res_id request: resolve the selector to a client id through the configured identities,
// then through what earlier tokens taught us, and finally by exchanging for
// every known client id and matching the issued token's oid / xms_mirid
// claim. Trial exchanges go through the same caches as any request.
func (s *Source) resolveAndToken(ctx context.Context, req Request, scope string) (Token, error) {
	kind := req.Identity.Kind
	value := strings.TrimSpace(req.Identity.Value)
	if value == "" {
		return Token{}, &Error{Reason: ReasonIdentityNotFound, Detail: fmt.Sprintf("empty %s", kind)}
	}
	for _, id := range s.cfg.Identities {
		if strings.EqualFold(selectorField(id, kind), value) {
			s.m.resolutions.WithLabelValues("configured").Inc()
			return s.token(ctx, normalizeID(id.ClientID), scope, req, false)
		}
	}
	sk := selectorKey{kind: kind, value: strings.ToLower(value)}
	if clientID, ok := s.ids.resolve(sk); ok {
		s.m.resolutions.WithLabelValues("remembered").Inc()
		return s.token(ctx, clientID, scope, req, false)
	}

	var transient *Error
	for _, c := range s.candidates() {
		if ctx.Err() != nil {
			return Token{}, &Error{Reason: ReasonUnavailable, Detail: "the request ended while resolving the identity", Err: ctx.Err()}
		}
		tok, err := s.token(ctx, c, scope, Request{Identity: Selector{Kind: SelectClientID, Value: c}, Resource: req.Resource}, true)
		if err != nil {
			var xerr *Error
			if !errors.As(err, &xerr) {
				return Token{}, err
			}
			if !permanent(xerr) && xerr.Reason != ReasonAssertionRejected {
				transient = xerr
			}
			s.log.V(1).Info("trial exchange failed while resolving an identity", "selector", kind.String(), "clientID", c, "reason", xerr.Reason.String())
			continue
		}
		cl, err := decodeClaims(tok.AccessToken)
		if err != nil {
			continue
		}
		if strings.EqualFold(claimFor(cl, kind), value) {
			s.ids.remember(sk, c)
			s.m.resolutions.WithLabelValues("trial").Inc()
			s.log.V(1).Info("resolved identity by trial exchange", "selector", kind.String(), "value", value, "clientID", c)
			if req.ForceRefresh || req.RefreshTokenSHA256 != "" {
				return s.token(ctx, c, scope, req, false)
			}
			s.cache.markServed(cacheKey{tenant: s.cfg.TenantID, clientID: c, scope: scope}, tok.AccessToken, s.clock.Now())
			return tok, nil
		}
	}
	if transient != nil {
		// Some identity could not be asked: the answer may exist, so do not
		// claim it does not (a 400 would make az CLI give up).
		s.m.resolutions.WithLabelValues("failed").Inc()
		return Token{}, transient
	}
	s.m.resolutions.WithLabelValues("not_found").Inc()
	return Token{}, &Error{Reason: ReasonIdentityNotFound,
		Detail: fmt.Sprintf("no configured or known identity has %s %s", kind, value)}
}

// candidates are the client ids a trial exchange may try, in a stable
// order: the default identity, the configured ones, then those seen in
// successful requests.
func (s *Source) candidates() []string {
	seen := s.ids.seenClients()
	out := make([]string, 0, 1+len(s.cfg.Identities)+len(seen))
	add := func(id string) {
		id = normalizeID(id)
		if id == "" {
			return
		}
		for _, c := range out {
			if c == id {
				return
			}
		}
		out = append(out, id)
	}
	add(s.cfg.DefaultClientID)
	for _, id := range s.cfg.Identities {
		add(id.ClientID)
	}
	for _, id := range seen {
		add(id)
	}
	return out
}

func selectorField(id Identity, kind SelectorKind) string {
	if kind == SelectObjectID {
		return id.ObjectID
	}
	return id.ResourceID
}

func claimFor(c claims, kind SelectorKind) string {
	if kind == SelectObjectID {
		return c.ObjectID
	}
	return c.ResourceID
}
