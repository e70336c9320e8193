import Foundation
import Stages

exit(RoleMain.main("decode", CommandLine.arguments))
