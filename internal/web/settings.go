package web

// settingsRoutes registers the settings pages (none yet).
func (s *Server) settingsRoutes() []route { return nil }
