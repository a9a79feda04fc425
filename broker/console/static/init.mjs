// GOV.UK Frontend's components (error summary focus, checkboxes' conditional reveals, ...).
// The pages work without it: every form posts and every link navigates on its own.
import { initAll } from '/school/static/govuk/govuk-frontend.min.js'
initAll()
