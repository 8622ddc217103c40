package api

import (
	"net/http"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/enroll"
)

var errNoOnboarding = &core.Error{Kind: core.KindUnavailable, Code: "unavailable", Message: "onboarding is unavailable on this core replica; see its log"}

// onboarding reports whether the MFA and enrollment services exist.
func (s *Server) onboarding() error {
	if s.mfa == nil || s.enroll == nil {
		return errNoOnboarding
	}
	return nil
}

// Onboarding: enrollment links, the caller's second factor and test mail.

// codeRequest carries a TOTP code or a recovery code.
type codeRequest struct {
	Code string `json:"code"`
}

type testMailRequest struct {
	To string `json:"to"`
}

func (s *Server) startEnrollment(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := s.onboarding(); err != nil {
		return err
	}
	var in enroll.StartInput
	if err := decode(w, r, &in); err != nil {
		return err
	}
	st, err := s.enroll.Start(r.Context(), c.actor(), r.PathValue("id"), in)
	return created(w, st, err)
}

func (s *Server) resetUserTOTP(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := s.onboarding(); err != nil {
		return err
	}
	return noContent(w, s.mfa.Reset(r.Context(), c.actor(), r.PathValue("id")))
}

func (s *Server) setupTOTP(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := s.onboarding(); err != nil {
		return err
	}
	setup, err := s.mfa.Setup(r.Context(), c.actor(), c.principal.UserID)
	return ok(w, setup, err)
}

func (s *Server) confirmTOTP(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := s.onboarding(); err != nil {
		return err
	}
	var in codeRequest
	if err := decode(w, r, &in); err != nil {
		return err
	}
	codes, err := s.mfa.Confirm(r.Context(), c.actor(), c.principal.UserID, in.Code)
	return ok(w, codes, err)
}

func (s *Server) disableTOTP(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := s.onboarding(); err != nil {
		return err
	}
	var in codeRequest
	if err := decode(w, r, &in); err != nil {
		return err
	}
	return noContent(w, s.mfa.Disable(r.Context(), c.actor(), c.principal.UserID, in.Code))
}

func (s *Server) regenerateRecoveryCodes(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	if err := s.onboarding(); err != nil {
		return err
	}
	var in codeRequest
	if err := decode(w, r, &in); err != nil {
		return err
	}
	codes, err := s.mfa.RegenerateRecoveryCodes(r.Context(), c.actor(), c.principal.UserID, in.Code)
	return ok(w, codes, err)
}

func (s *Server) testMail(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	var in testMailRequest
	if err := decode(w, r, &in); err != nil {
		return err
	}
	return noContent(w, s.mail.SendTest(r.Context(), c.actor(), in.To))
}
