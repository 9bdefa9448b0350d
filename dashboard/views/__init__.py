"""Pages and fragments, one module per area. Views parse input, check access, call a domain
function and render; they hold no logic of their own."""
