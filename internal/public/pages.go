package public

import (
	"bytes"
	"embed"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"time"

	"github.com/wardvpn/ward/internal/core"
	"github.com/wardvpn/ward/internal/core/enroll"
	"github.com/wardvpn/ward/internal/core/mfa"
)

//go:embed templates/*.html
var templateFS embed.FS

var pages = template.Must(template.New("").ParseFS(templateFS, "templates/*.html"))

// maxFormBytes bounds a form body.
const maxFormBytes = 64 << 10

// pageData is what every page template gets.
type pageData struct {
	Title    string
	Instance string
	Error    string
	Notice   string
	Token    string
	Expires  string

	Info       *enroll.Info
	Setup      *mfa.Setup
	QR         template.URL
	Codes      []string
	Reg        *enroll.Registered
	Done       *enroll.Completed
	Reset      *enroll.ResetInfo
	Login      string
	DeviceName string
	PublicKey  string
}

func (h *Handler) render(w http.ResponseWriter, r *http.Request, status int, name string, d pageData) {
	if d.Instance == "" {
		d.Instance = h.enroll.InstanceName(r.Context())
	}
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, d); err != nil {
		h.log.Error("render page", "page", name, "route", patternPath(r), "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (h *Handler) renderError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	title := "Not found"
	switch {
	case status == http.StatusTooManyRequests:
		title = "Too many requests"
	case status >= 500:
		title = "Something went wrong"
	case status != http.StatusNotFound:
		title = "Cannot do that"
	}
	h.render(w, r, status, "error", pageData{Title: title, Error: msg})
}

// message is what a page says about err; internal errors are logged (with
// the route pattern, never the path that holds a token) and not shown.
func (h *Handler) message(r *http.Request, err error) string {
	if de, ok := core.AsError(err); ok {
		if de.Message != "" {
			return de.Message
		}
		return de.Code
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return "The form is too large."
	}
	h.log.Error("public page failed", "method", r.Method, "route", patternPath(r), "err", err)
	return "Something went wrong on our side; try again later."
}

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	h.renderError(w, r, statusOf(err), h.message(r, err))
}

func parseForm(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return core.Invalid("invalid_form", "", "the form could not be read")
	}
	return nil
}

func expires(ms int64) string { return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04 UTC") }

func (h *Handler) pageIndex(w http.ResponseWriter, r *http.Request) {
	h.render(w, r, http.StatusOK, "index", pageData{Title: "Welcome"})
}

// Enrollment pages.

func (h *Handler) pageEnroll(w http.ResponseWriter, r *http.Request) {
	h.enrollOverview(w, r, http.StatusOK, pageData{})
}

// enrollOverview renders the overview of an enrollment link, with an error
// or notice and refilled form values in d.
func (h *Handler) enrollOverview(w http.ResponseWriter, r *http.Request, status int, d pageData) {
	token := r.PathValue("token")
	info, err := h.enroll.Info(r.Context(), token)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d.Info, d.Token, d.Instance, d.Expires = &info, token, info.InstanceName, expires(info.ExpiresAt)
	d.Title = "Set up your account"
	if info.Kind == enroll.KindNewClient {
		d.Title = "Configure a new client"
	}
	h.render(w, r, status, "enroll", d)
}

func (h *Handler) pageEnrollPost(w http.ResponseWriter, r *http.Request) {
	token := r.PathValue("token")
	ip := ClientIP(r)
	if err := parseForm(w, r); err != nil {
		h.fail(w, r, err)
		return
	}
	f := r.PostForm
	again := func(err error, d pageData) {
		d.Error = h.message(r, err)
		h.enrollOverview(w, r, statusOf(err), d)
	}
	switch f.Get("action") {
	case "password":
		if f.Get("password") != f.Get("password2") {
			again(core.Invalid("password_mismatch", "password2", "The two passwords differ."), pageData{})
			return
		}
		if err := h.enroll.SetPassword(r.Context(), token, f.Get("password"), ip); err != nil {
			again(err, pageData{})
			return
		}
		http.Redirect(w, r, "/enroll/"+url.PathEscape(token), http.StatusSeeOther)
	case "totp":
		setup, err := h.enroll.SetupTOTP(r.Context(), token, ip)
		if err != nil {
			again(err, pageData{})
			return
		}
		h.render(w, r, http.StatusOK, "enroll_totp", pageData{Title: "Set up your authenticator app", Token: token, Setup: &setup,
			QR: template.URL("data:image/png;base64," + setup.QRPNG)})
	case "totp_confirm":
		codes, err := h.enroll.ConfirmTOTP(r.Context(), token, f.Get("code"), ip)
		if err != nil {
			// Show the same QR code again when the code was merely wrong.
			if errors.Is(err, mfa.ErrInvalidCode) || errors.Is(err, mfa.ErrCodeUsed) {
				if setup, rerr := mfa.RenderSetup(f.Get("otpauth_url")); rerr == nil {
					h.render(w, r, statusOf(err), "enroll_totp", pageData{Title: "Set up your authenticator app", Token: token, Setup: &setup,
						QR: template.URL("data:image/png;base64," + setup.QRPNG), Error: h.message(r, err)})
					return
				}
			}
			again(err, pageData{})
			return
		}
		h.render(w, r, http.StatusOK, "enroll_codes", pageData{Title: "Your recovery codes", Token: token, Codes: codes.Codes})
	case "device":
		in := enroll.DeviceInput{Name: f.Get("name"), PublicKey: f.Get("public_key")}
		reg, err := h.enroll.RegisterDevice(r.Context(), token, in, ip)
		if err != nil {
			again(err, pageData{DeviceName: in.Name, PublicKey: in.PublicKey})
			return
		}
		h.render(w, r, http.StatusCreated, "enroll_device", pageData{Title: "Your device is registered", Token: token, Reg: &reg})
	case "complete":
		done, err := h.enroll.Complete(r.Context(), token, ip)
		if err != nil {
			again(err, pageData{})
			return
		}
		h.render(w, r, http.StatusOK, "enroll_done", pageData{Title: "All set", Done: &done})
	default:
		again(core.Invalid("invalid_action", "action", "Unknown action."), pageData{})
	}
}

// Password-reset pages.

func (h *Handler) pageResetRequest(w http.ResponseWriter, r *http.Request) {
	h.render(w, r, http.StatusOK, "reset_request", pageData{Title: "Reset your password"})
}

func (h *Handler) pageResetRequestPost(w http.ResponseWriter, r *http.Request) {
	if err := parseForm(w, r); err != nil {
		h.fail(w, r, err)
		return
	}
	login := r.PostForm.Get("login")
	if err := h.enroll.RequestReset(r.Context(), login, ClientIP(r)); err != nil {
		h.render(w, r, statusOf(err), "reset_request", pageData{Title: "Reset your password", Error: h.message(r, err), Login: login})
		return
	}
	h.render(w, r, http.StatusOK, "reset_sent", pageData{Title: "Check your mail"})
}

func (h *Handler) pageReset(w http.ResponseWriter, r *http.Request) {
	h.resetForm(w, r, http.StatusOK, "")
}

func (h *Handler) resetForm(w http.ResponseWriter, r *http.Request, status int, msg string) {
	info, err := h.enroll.ResetInfo(r.Context(), r.PathValue("token"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.render(w, r, status, "reset_form", pageData{Title: "Choose a new password", Instance: info.InstanceName, Reset: &info,
		Expires: expires(info.ExpiresAt), Error: msg})
}

func (h *Handler) pageResetPost(w http.ResponseWriter, r *http.Request) {
	if err := parseForm(w, r); err != nil {
		h.fail(w, r, err)
		return
	}
	f := r.PostForm
	if f.Get("password") != f.Get("password2") {
		h.resetForm(w, r, http.StatusBadRequest, "The two passwords differ.")
		return
	}
	if err := h.enroll.CompleteReset(r.Context(), r.PathValue("token"), f.Get("password"), ClientIP(r)); err != nil {
		if errors.Is(err, core.ErrInvalid) {
			h.resetForm(w, r, statusOf(err), h.message(r, err))
			return
		}
		h.fail(w, r, err)
		return
	}
	h.render(w, r, http.StatusOK, "reset_done", pageData{Title: "Password changed"})
}
