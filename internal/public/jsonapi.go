package public

import (
	"net/http"
	"strings"

	"github.com/wardvpn/ward/internal/api"
	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/enroll"
)

// Request bodies of the JSON API.
type (
	passwordRequest struct {
		Password string `json:"password"`
	}
	codeRequest struct {
		Code string `json:"code"`
	}
	resetRequest struct {
		// Login is the username or e-mail address.
		Login string `json:"login"`
	}
	// resetRequested is the one answer to every reset request.
	resetRequested struct {
		Status string `json:"status"`
	}
)

const resetAnswer = "if an account with this username or e-mail address exists, a mail with a reset link is on its way"

func (h *Handler) enrollmentInfo(w http.ResponseWriter, r *http.Request, _ string) error {
	info, err := h.enroll.Info(r.Context(), r.PathValue("token"))
	if err != nil {
		return err
	}
	api.WriteJSON(w, http.StatusOK, info)
	return nil
}

func (h *Handler) enrollmentPassword(w http.ResponseWriter, r *http.Request, ip string) error {
	var in passwordRequest
	if err := api.Decode(w, r, &in); err != nil {
		return err
	}
	if err := h.enroll.SetPassword(r.Context(), r.PathValue("token"), in.Password, ip); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *Handler) enrollmentTOTP(w http.ResponseWriter, r *http.Request, ip string) error {
	setup, err := h.enroll.SetupTOTP(r.Context(), r.PathValue("token"), ip)
	if err != nil {
		return err
	}
	api.WriteJSON(w, http.StatusOK, setup)
	return nil
}

func (h *Handler) enrollmentTOTPConfirm(w http.ResponseWriter, r *http.Request, ip string) error {
	var in codeRequest
	if err := api.Decode(w, r, &in); err != nil {
		return err
	}
	codes, err := h.enroll.ConfirmTOTP(r.Context(), r.PathValue("token"), in.Code, ip)
	if err != nil {
		return err
	}
	api.WriteJSON(w, http.StatusOK, codes)
	return nil
}

func (h *Handler) enrollmentDevice(w http.ResponseWriter, r *http.Request, ip string) error {
	var in enroll.DeviceInput
	if err := api.Decode(w, r, &in); err != nil {
		return err
	}
	reg, err := h.enroll.RegisterDevice(r.Context(), r.PathValue("token"), in, ip)
	if err != nil {
		return err
	}
	api.WriteJSON(w, http.StatusCreated, reg)
	return nil
}

func (h *Handler) enrollmentComplete(w http.ResponseWriter, r *http.Request, ip string) error {
	done, err := h.enroll.Complete(r.Context(), r.PathValue("token"), ip)
	if err != nil {
		return err
	}
	api.WriteJSON(w, http.StatusOK, done)
	return nil
}

func (h *Handler) resetRequest(w http.ResponseWriter, r *http.Request, ip string) error {
	var in resetRequest
	if err := api.Decode(w, r, &in); err != nil {
		return err
	}
	if err := h.enroll.RequestReset(r.Context(), in.Login, ip); err != nil {
		return err
	}
	api.WriteJSON(w, http.StatusAccepted, resetRequested{Status: resetAnswer})
	return nil
}

func (h *Handler) resetInfo(w http.ResponseWriter, r *http.Request, _ string) error {
	info, err := h.enroll.ResetInfo(r.Context(), r.PathValue("token"))
	if err != nil {
		return err
	}
	api.WriteJSON(w, http.StatusOK, info)
	return nil
}

func (h *Handler) resetComplete(w http.ResponseWriter, r *http.Request, ip string) error {
	var in passwordRequest
	if err := api.Decode(w, r, &in); err != nil {
		return err
	}
	if err := h.enroll.CompleteReset(r.Context(), r.PathValue("token"), in.Password, ip); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *Handler) clientSync(w http.ResponseWriter, r *http.Request, _ string) error {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || strings.TrimSpace(token) == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="ward client sync"`)
		return &core.Error{Kind: core.KindUnauthenticated, Code: "unauthenticated", Message: "send Authorization: Bearer <client sync token>"}
	}
	res, err := h.enroll.Sync(r.Context(), strings.TrimSpace(token))
	if err != nil {
		return err
	}
	api.WriteJSON(w, http.StatusOK, res)
	return nil
}
