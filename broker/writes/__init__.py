"""Write-back: partners send records, the school's agent applies them to the MIS once."""
